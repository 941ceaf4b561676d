"""Figures from stored runs (matplotlib): what one sweep says, and what the history says.

- ``time_per_sample``: seconds per sample against batch size, log-log, a line
  per method, the floor dashed;
- ``speedup``: speedup over the loop against batch size;
- ``memory``: peak memory of one call against batch size, with the B x P
  gradient minimum dashed;
- ``history``: the vmap/loop time ratio of each batch size across stored runs
  (lower is better), oldest first.

Each is written as PNG and SVG, one panel per workload and device.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from persample_gate.summary import derive


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plots need matplotlib: pip install 'persample-core[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figures_of(run) -> dict:
    """{point: {time_per_sample, speedup_over_loop, floor_multiple, peak_memory_bytes, gradient_bytes}}."""
    derived = derive(
        {point: statistics.median(rounds) for point, rounds in run.samples.items()},
        baseline=run.baseline,
        floor_name=run.floor,
    )
    return {
        point: {
            **figures,
            "peak_memory_bytes": run.extra.get(point, {}).get("peak_memory_bytes"),
            "gradient_bytes": run.extra.get(point, {}).get("gradient_bytes"),
        }
        for point, figures in derived.items()
    }


def _series(figures: dict, key: str, label=lambda point: point.method):
    """{(workload, device): {label: [(batch_size, value), ...]}} of one figure, skipping None."""
    series = defaultdict(lambda: defaultdict(list))
    for point in sorted(figures):
        if figures[point][key] is not None:
            series[(point.workload, point.device)][label(point)].append((point.batch_size, figures[point][key]))
    return series


def colours(run) -> dict:
    """One colour per method of ``run`` in every figure of it (matplotlib's cycle): the baseline first, the floor
    last."""
    names = sorted({point.method for point in run.samples}, key=lambda m: (m == run.floor, m != run.baseline, m))
    return {name: f"C{index % 10}" for index, name in enumerate(names)}


def _panels(plt, series, title, ylabel, *, colour, dashed, logy=True, reference=None):
    panels = sorted(series)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7, 5 * len(panels)), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for method, xy in sorted(series[panel].items()):
            xs, ys = zip(*xy)
            ax.plot(
                xs, ys, "--x" if method in dashed else "-o", label=method, markersize=4, color=colour.get(method, "k")
            )
        if reference and reference.get(panel):
            ax.plot(*zip(*sorted(next(iter(reference[panel].values())))), "k:", label="B x P gradients")
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set(title=f"{panel[0]} on {panel[1]}", xlabel="batch size", ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=120)
    return paths


def sweep_figures(run, out: Path) -> list[Path]:
    """Time per sample, speedup and memory of one run."""
    plt = _pyplot()
    label = f"run {run.path.name[:4]} at {run.commit[:7]} on {run.machine.get('hardware_id', '?')}"
    figures, style = figures_of(run), {"colour": colours(run), "dashed": (run.floor,)}
    written = _save(
        _panels(plt, _series(figures, "time_per_sample"), f"time per sample, {label}", "seconds per sample", **style),
        out,
        "time_per_sample",
    )
    written += _save(
        _panels(
            plt,
            _series(figures, "speedup_over_loop"),
            f"speedup over {run.baseline}, {label}",
            f"x faster than {run.baseline}",
            **style,
        ),
        out,
        "speedup",
    )
    # The floor writes into a buffer kept from its warm-up: its peak is not a method's.
    peaks = _series({p: f for p, f in figures.items() if p.method != run.floor}, "peak_memory_bytes")
    if peaks:
        minimum = _series({p: f for p, f in figures.items() if p.method == run.floor}, "gradient_bytes")
        written += _save(
            _panels(plt, peaks, f"peak memory of one call, {label}", "bytes", reference=minimum, **style), out, "memory"
        )
    plt.close("all")
    return written


def history_figure(runs, out: Path, method: str = "vmap") -> list[Path]:
    """The method/loop time ratio per batch size across ``runs`` (oldest first)."""
    plt = _pyplot()
    series = defaultdict(lambda: defaultdict(list))
    for index, run in enumerate(runs):
        for point, figures in figures_of(run).items():
            if point.method == method and figures["speedup_over_loop"]:
                series[(point.workload, point.device)][f"B={point.batch_size}"].append(
                    (index, 1 / figures["speedup_over_loop"])
                )
    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(5 * max(1, len(series)), 4), squeeze=False)
    for ax, panel in zip(axes[0], sorted(series)):
        for label, xy in sorted(series[panel].items(), key=lambda item: int(item[0][2:])):
            ax.plot(*zip(*xy), "-o", label=label, markersize=4)
        ax.set_xticks(range(len(runs)), [f"{r.path.name[:4]}\n{r.commit[:7]}" for r in runs], fontsize=7)
        ax.set(
            title=f"{panel[0]} on {panel[1]}",
            xlabel="stored run (id, commit)",
            ylabel=f"{method} time / loop time (lower is better)",
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"history of the {method}/loop ratio")
    fig.tight_layout()
    written = _save(fig, out, "history")
    plt.close("all")
    return written
