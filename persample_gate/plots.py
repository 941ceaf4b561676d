"""Figures from stored runs (matplotlib): what one sweep says, what each hardware says, and what the history says.

- ``time_per_sample``: seconds per sample against batch size, log-log, a line
  per method, the floor dashed;
- ``speedup``: speedup over the run's baseline (the loop; the non-private step in a dp run) against batch size;
- ``memory``: peak memory of one call against batch size, with the B x P
  gradient minimum dotted;
- ``history``: each method's speedup at each batch size across stored runs,
  oldest first, with the gate's verdicts marked where they are given;
- ``hardware_figure``: the speedup and time per sample of the newest run of
  each hardware side by side, on shared axes (``persample report``).

Axes read as users write the numbers: batch sizes 1, 8, 64, speedups 0.5x,
1x, 2x, times 1 ms, 100 us (matplotlib's own log ticks read 2^3 and 3x10^0).
``persample plot`` writes each figure as PNG and SVG.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

from persample_bench.runformat import Point, baseline_of
from persample_bench.summary import derive, format_bytes, format_seconds, of_rounds

PLOTS_EXTRA = "pip install 'persample-core[plots]'"
REFERENCE = "B x P gradients"  # the memory figure's dotted line


def pyplot():
    """matplotlib's pyplot on the file-only backend, or one line saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(f"plots need matplotlib: {PLOTS_EXTRA}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figures_of(run) -> dict:
    """{point: {time_per_sample, speedup_over_loop, floor_multiple, peak_memory_bytes, gradient_bytes}}."""
    medians, interleaved = of_rounds(run.samples, run.baseline_rounds)
    derived = derive(medians, baseline=run.baseline, floor_name=run.floor, interleaved=interleaved)
    return {
        point: {
            **figures,
            "peak_memory_bytes": run.extra.get(point, {}).get("peak_memory_bytes"),
            "gradient_bytes": run.extra.get(point, {}).get("gradient_bytes"),
        }
        for point, figures in derived.items()
    }


def _series(figures: dict, key: str):
    """{(workload, where): {method: [(batch_size, value), ...]}} of one figure, skipping None; ``where``: the device,
    with the dtype where it is not float32 (``Point.where``), so that two dtypes draw two lines."""
    series = defaultdict(lambda: defaultdict(list))
    for point in sorted(figures):
        if figures[point][key] is not None:
            series[(point.workload, point.where)][point.method].append((point.batch_size, figures[point][key]))
    return series


def colours(*runs) -> dict:
    """One colour per method of ``runs`` in every figure of them (matplotlib's cycle): the baseline first, the floor
    last."""
    first = runs[0]
    methods = {point.method for run in runs for point in run.samples}
    names = sorted(methods, key=lambda m: (m == first.floor, m != first.baseline, m))
    return {**{name: f"C{index % 10}" for index, name in enumerate(names)}, REFERENCE: "k"}


def _speedup(value: float) -> str:
    return f"{value:g}x"


def log_ticks(axis, label) -> None:
    """Put ticks on a log ``axis`` (``ax.yaxis``) at round values within its limits, written by ``label``: 1, 2
    and 5 times powers of ten, or powers alone where that makes more than eight, or a finer series where it
    makes fewer than three, or in a range narrower still matplotlib's evenly spaced round values (0.9, 1, 1.1)."""
    import matplotlib.ticker as ticker

    low, high = axis.get_view_interval()
    powers = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for steps in ((1, 2, 5), (1,), (1, 1.5, 2, 3, 4, 5, 6, 8)):
        ticks = [tick for p in powers for step in steps if low <= (tick := round(step * 10.0**p, 12)) <= high]
        if 3 <= len(ticks) <= 8:
            break
    if len(ticks) < 3:
        ticks = [tick for tick in ticker.MaxNLocator(nbins=5).tick_values(low, high) if low <= tick <= high]
    axis.set_ticks(ticks, [label(round(tick, 12)) for tick in ticks])
    axis.set_minor_formatter(ticker.NullFormatter())


def batch_axis(ax, sizes) -> None:
    """A log2 x axis with a labelled tick at each batch size measured, and no others."""
    import matplotlib.ticker as ticker

    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(sizes), [str(size) for size in sorted(sizes)])
    ax.xaxis.set_minor_locator(ticker.NullLocator())


def _grid(plt, titles, rows, *, colour, styles, suptitle):
    """Line panels against batch size: a column per title, a row per ``(ylabel, tick label, [cell per column])``,
    a cell being ``{name: [(batch size, value), ...]}``. A row's panels share their y axis, so that columns
    compare at a glance."""
    fig, axes = plt.subplots(
        len(rows),
        len(titles),
        figsize=(max(7.0, 4.6 * len(titles)), 0.6 + 3.6 * len(rows)),
        squeeze=False,
        sharex=True,
        sharey="row",
    )
    sizes = {size for _, _, cells in rows for cell in cells for xy in cell.values() for size, _ in xy}
    for r, (ylabel, label, cells) in enumerate(rows):
        for c, (ax, cell) in enumerate(zip(axes[r], cells)):
            for name, xy in sorted(cell.items()):
                ax.plot(
                    *zip(*sorted(xy)), styles.get(name, "-o"), label=name, markersize=4, color=colour.get(name, "k")
                )
            if label is _speedup:
                ax.axhline(1, color="grey", linewidth=0.8)  # as fast as the loop
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(titles[c] if r == 0 else "", fontsize="medium")
            ax.set_ylabel(ylabel if c == 0 else "")
            ax.set_xlabel("batch size" if r == len(rows) - 1 else "")
            if cell:
                ax.legend(fontsize=8)
        log_ticks(axes[r][0].yaxis, label)
    if sizes:
        batch_axis(axes[0][0], sizes)
    fig.suptitle(suptitle, fontsize="medium")
    fig.tight_layout()
    return fig


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=120)
    return paths


def _row(series: dict, panels, ylabel, label):
    return ylabel, label, [series.get(panel, {}) for panel in panels]


def _one_row(plt, series, ylabel, label, suptitle, style):
    panels = sorted(series)
    return _grid(
        plt, [f"{w} on {d}" for w, d in panels], [_row(series, panels, ylabel, label)], suptitle=suptitle, **style
    )


def _style(*runs) -> dict:
    return {"colour": colours(*runs), "styles": {runs[0].floor: "--x", REFERENCE: ":"}}


def sweep_figures(run, out: Path) -> list[Path]:
    """Time per sample, speedup and memory of one run."""
    plt = pyplot()
    label = f"run {run.id} at {run.commit[:7]} on {run.machine.get('hardware_id', '?')}"
    figures, style = figures_of(run), _style(run)
    written = _save(
        _one_row(
            plt,
            _series(figures, "time_per_sample"),
            "time per sample",
            format_seconds,
            f"time per sample, {label}",
            style,
        ),
        out,
        "time_per_sample",
    )
    written += _save(
        _one_row(
            plt,
            _series(figures, "speedup_over_loop"),
            f"x faster than {run.baseline}",
            _speedup,
            f"speedup over {run.baseline}, {label}",
            style,
        ),
        out,
        "speedup",
    )
    # The floor writes into a buffer kept from its warm-up: its peak is not a method's.
    peaks = _series({p: f for p, f in figures.items() if p.method != run.floor}, "peak_memory_bytes")
    if peaks:
        for panel, xy in _series({p: f for p, f in figures.items() if p.method == run.floor}, "gradient_bytes").items():
            if panel in peaks:
                peaks[panel][REFERENCE] = xy[run.floor]
        written += _save(
            _one_row(plt, peaks, "peak memory", format_bytes, f"peak memory of one call, {label}", style), out, "memory"
        )
    plt.close("all")
    return written


def hardware_label(run, device: str) -> str:
    """What ``run``'s points on ``device`` ran on: the GPU for CUDA points (``cuda``, ``cuda:N``: the name the run
    recorded for that device), else the CPU model."""
    device = device.split("-")[0]  # a Point.where: the device, then the dtype
    named = (run.machine.get("cuda_devices") or {}).get(device, {}).get("name")
    name = (named or run.machine.get("gpu_name")) if device.split(":")[0] == "cuda" else None
    return name or run.machine.get("cpu_model") or run.machine.get("hardware_id", "?")


def hardware_figures(newest) -> list[tuple[str, object]]:
    """``[(workload, figure)]``: for each workload, the speedup and time per sample of ``newest`` (one run per
    hardware) against batch size, a column per hardware and device."""
    plt = pyplot()
    figures = [figures_of(run) for run in newest]
    speedups = [_series(f, "speedup_over_loop") for f in figures]
    times = [_series(f, "time_per_sample") for f in figures]
    baselines = " / ".join(sorted({run.baseline for run in newest}))  # the loop; a dp run's, the non-private step
    made = []
    for workload in sorted({w for series in times for w, _ in series}):
        columns = [(i, device) for i, series in enumerate(times) for w, device in sorted(series) if w == workload]
        titles = [f"{hardware_label(newest[i], device)}\n{device}, run {newest[i].id}" for i, device in columns]
        rows = [
            (f"x faster than {baselines}", _speedup, [speedups[i].get((workload, d), {}) for i, d in columns]),
            ("time per sample", format_seconds, [times[i].get((workload, d), {}) for i, d in columns]),
        ]
        made.append((workload, _grid(plt, titles, rows, suptitle=workload, **_style(*newest))))
    return made


def run_label(run) -> str:
    """A stored run on a history axis: its saved id and commit."""
    return f"{run.id}\n{run.commit[:7]}"


# How a flagged row of the gate is marked on the history: a point's row on the point (the speedup's by a cross,
# the time's by a ring around it, so that both show where both are flagged), a method's pooled row by a band
# across the run's column.
VERDICT_COLOURS = {"ratio": "red", "time": "darkorange"}
POINT_MARKS = {
    "ratio": {"marker": "X", "markersize": 11, "zorder": 6},
    "time": {"marker": "o", "markersize": 15, "markerfacecolor": "none", "markeredgewidth": 2, "zorder": 5},
}


def flag_id(run, change) -> str:
    """The SVG id of the mark of a flagged ``change`` of ``run``: names the run, the row and the metric."""
    return re.sub(r"[^\w.-]+", "_", f"flag-{run.path.stem}-{change.point.id}-{change.metric}").strip("_")


def history_figure_of(runs, verdicts=None):
    """Each method's speedup at each batch size across ``runs`` (one hardware, oldest first): a row per workload
    and device, a column per method. ``verdicts[i]``: the gate's changes of run i against run i - 1 (or None);
    its regressions are marked."""
    plt = pyplot()
    import matplotlib.lines as mlines

    speedups = defaultdict(lambda: defaultdict(dict))  # (workload, device) -> method -> {(run, batch size): value}
    for index, run in enumerate(runs):
        for point, figures in figures_of(run).items():
            if figures["speedup_over_loop"] and point.method != run.baseline:  # the loop's is 1x
                panel = speedups[(point.workload, point.where)][point.method]
                panel[(index, point.batch_size)] = figures["speedup_over_loop"]
    rows = sorted(speedups)
    methods = sorted({method for row in rows for method in speedups[row]})
    fig, axes = plt.subplots(
        max(1, len(rows)),
        max(1, len(methods)),
        figsize=(max(7.0, 4.2 * len(methods)), 0.8 + 3.4 * max(1, len(rows))),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    sizes = sorted({size for row in rows for by in speedups[row].values() for _, size in by})
    palette = plt.get_cmap("viridis")
    shade = {size: palette(0.85 * i / max(1, len(sizes) - 1)) for i, size in enumerate(sizes)}
    flagged = [(index, c) for index, changes in enumerate(verdicts or []) for c in changes or () if c.regressed]
    marked = set()
    for r, row in enumerate(rows):
        for c, method in enumerate(methods):
            ax, by = axes[r][c], speedups[row].get(method, {})
            for size in sizes:
                xy = sorted((index, value) for (index, b), value in by.items() if b == size)
                if xy:
                    ax.plot(*zip(*xy), "-o", markersize=3, color=shade[size], label=f"B={size}")
            for index, change in flagged:
                point, colour = change.point, VERDICT_COLOURS[change.metric]
                if (point.method, getattr(point, "where", point.device)) != (method, row[1]):  # Pooled: device
                    continue
                gid = flag_id(runs[index], change)
                if not isinstance(point, Point):  # a method's pooled points: across the run's column
                    ax.axvspan(index - 0.3, index + 0.3, color=colour, alpha=0.15, linewidth=0, gid=gid)
                    marked.add(("pooled", change.metric))
                elif point.workload == row[0] and (index, point.batch_size) in by:
                    value = by[(index, point.batch_size)]
                    ax.plot(index, value, linestyle="", color=colour, gid=gid, **POINT_MARKS[change.metric])
                    marked.add(("point", change.metric))
            ax.axhline(1, color="grey", linewidth=0.8)
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{method}, {row[0]} on {row[1]}", fontsize="medium")
            ax.set_ylabel(f"x faster than {baseline_of(method)}")
            if by:
                ax.legend(fontsize=7)
    log_ticks(axes[0][0].yaxis, _speedup)
    step = max(1, math.ceil(len(runs) / 8))  # at most eight labels along a panel
    shown = list(range(0, len(runs), step))
    axes[0][0].set_xticks(shown, [run_label(runs[i]) for i in shown])
    axes[0][0].set_xlim(-0.5, len(runs) - 0.5)
    for ax in axes[-1]:
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel("stored run (id, commit), oldest first")
    pooled = {"marker": "s", "markersize": 12, "alpha": 0.3}
    legend = {
        ("point", "ratio"): (POINT_MARKS["ratio"], "speedup regression at the point"),
        ("point", "time"): (POINT_MARKS["time"], "time regression at the point"),
        ("pooled", "ratio"): (pooled, "speedup regression of the method's pooled points"),
        ("pooled", "time"): (pooled, "time regression of the method's pooled points"),
    }
    handles = [
        mlines.Line2D([], [], linestyle="", color=VERDICT_COLOURS[key[1]], **legend[key][0]) for key in sorted(marked)
    ]
    if handles:
        fig.legend(handles, [legend[key][1] for key in sorted(marked)], loc="lower center", ncol=2, fontsize=8)
    fig.suptitle("history of each method's speedup over its baseline (a step down is a slowdown)", fontsize="medium")
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return fig


def history_figure(runs, out: Path, verdicts=None) -> list[Path]:
    """``history_figure_of`` written as PNG and SVG."""
    written = _save(history_figure_of(runs, verdicts), out, "history")
    pyplot().close("all")
    return written
