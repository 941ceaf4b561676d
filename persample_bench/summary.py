"""Derived figures and the summary table, from the stored rounds: no measuring here.

For each point: time per sample, speedup over the baseline (loop) at the same
workload, batch size and device, and multiple of the floor there. A run of the
DP step (its baseline the non-private step) gives each point's time and peak
memory as multiples of the non-private step's instead, as DP-SGD's costs are
read (Opacus's and fastDP's figures). Where a
method was timed in rounds interleaved with the loop, its speedup is the
median of the rounds' ratios, the figure its precision and the gate are about:
the loop's own point ran at another moment, and the machine's speed wanders
between moments (docs/measuring.md).
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from persample_bench.runformat import BASELINE, DEFAULT_DTYPE, FLOOR, NONPRIVATE, Point


def interleaved_speedup(method_rounds, baseline_rounds) -> float:
    """The baseline's time over the method's, from rounds timed in turn: the median of the rounds' ratios."""
    return 1 / statistics.median(m / b for m, b in zip(method_rounds, baseline_rounds))


def of_rounds(samples: dict, baseline_rounds: dict) -> tuple[dict, dict]:
    """``(medians, interleaved)`` of a run's raw rounds (``{point: seconds per round}``, and the baseline's rounds
    of the points timed interleaved with it): what ``derive`` and ``summary_rows`` take. Every view of a run
    reads its rounds through this, so that the summary, the stored JSON, the report and the plots show one
    speedup (tests/test_report.py holds the report's table equal to the summary's)."""
    medians = {point: statistics.median(rounds) for point, rounds in samples.items()}
    interleaved = {
        point: interleaved_speedup(samples[point], rounds)
        for point, rounds in baseline_rounds.items()
        if point in samples
    }
    return medians, interleaved


def derive(
    medians: dict[Point, float],
    *,
    baseline: str = BASELINE,
    floor_name: str = FLOOR,
    interleaved: dict[Point, float] | None = None,
) -> dict[Point, dict]:
    """``{point: {time_per_sample, speedup_over_loop, floor_multiple}}``, and ``time_vs_nonprivate`` where the
    baseline is the non-private step; None where the partner is missing. ``speedup_over_loop`` is over the run's
    baseline, whichever it is (the key predates the DP step's). ``interleaved``: the speedups of the points timed
    in rounds with the baseline (``interleaved_speedup``), taken as they are."""
    derived, interleaved = {}, interleaved or {}
    for point, median in medians.items():
        loop = medians.get(replace(point, method=baseline))
        floor = medians.get(replace(point, method=floor_name))
        speedup = loop / median if loop and point.method != floor_name else None
        derived[point] = {
            "time_per_sample": median / point.batch_size,
            "speedup_over_loop": interleaved.get(point, speedup),
            "floor_multiple": median / floor if floor else None,
        }
        if baseline == NONPRIVATE:
            speedup = derived[point]["speedup_over_loop"]
            derived[point]["time_vs_nonprivate"] = 1 / speedup if speedup else None
    return derived


def memory_multiples(peaks: dict, baseline: str) -> dict:
    """``{point: its peak memory over its baseline's}`` of ``{point: peak bytes}``; None where either is unknown."""
    multiples = {}
    for point, peak in peaks.items():
        theirs = peaks.get(replace(point, method=baseline))
        multiples[point] = peak / theirs if peak is not None and theirs else None
    return multiples


def format_seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def format_bytes(value) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


def _times(value, suffix="x") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


def render(header, rows, left: int) -> str:
    """A plain text table: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            str(cell).ljust(w) if i < left else str(cell).rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in (header, *rows)
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def summary_rows(
    medians: dict[Point, float],
    memory: dict | None = None,
    *,
    baseline: str = BASELINE,
    floor_name: str = FLOOR,
    interleaved: dict[Point, float] | None = None,
) -> tuple[tuple, list[tuple]]:
    """(header, rows) of the summary table: one row per point, grouped by workload, device (with the dtype, where
    it is not float32) and batch size (a group's cells left blank after its first row); the baseline first, the
    floor last.

    ``memory`` maps a point to (peak bytes of one call, B x P gradient bytes); ``interleaved`` as ``derive``. In a
    run of the DP step the time and the peak are multiples of the non-private step's, and there is no floor.
    """
    derived, memory = derive(medians, baseline=baseline, floor_name=floor_name, interleaved=interleaved), memory or {}
    dp = baseline == NONPRIVATE
    if dp:
        header = ("workload", "device", "B", "method", "median", "per sample", f"x {baseline}", "peak mem", "mem x")
        multiples = memory_multiples({point: peak for point, (peak, _) in memory.items()}, baseline)
    else:
        header = ("workload", "device", "B", "method", "median", "per sample", f"vs {baseline}", "x floor")
        header += ("peak mem", "x min")
    rows, previous = [], None
    for point in sorted(
        medians,
        key=lambda p: (
            p.workload,
            p.device,
            p.dtype != DEFAULT_DTYPE,
            p.dtype,
            p.batch_size,
            p.method == floor_name,
            p.method != baseline,
            p.method,
        ),
    ):
        device = point.device if point.dtype == DEFAULT_DTYPE else f"{point.device} {point.dtype}"
        group = (point.workload, device, str(point.batch_size))
        d = derived[point]
        peak, minimum = memory.get(point, (None, None))
        if dp:
            ratios = (_times(d["time_vs_nonprivate"]),)
            memory_ratio = multiples.get(point)
        else:
            ratios = (_times(d["speedup_over_loop"]), _times(d["floor_multiple"]))
            memory_ratio = peak / minimum if peak is not None and minimum else None
        rows.append(
            (
                *(group if group != previous else ("", "", "")),
                point.method,
                format_seconds(medians[point]),
                format_seconds(d["time_per_sample"]),
                *ratios,
                format_bytes(peak),
                _times(memory_ratio),
            )
        )
        previous = group
    return header, rows


LEFT_ALIGNED = 4  # the summary table's columns that name the point


def summary_table(medians: dict[Point, float], memory: dict | None = None, **given) -> str:
    """``summary_rows`` (the same arguments) as a plain text table."""
    return render(*summary_rows(medians, memory, **given), left=LEFT_ALIGNED)
