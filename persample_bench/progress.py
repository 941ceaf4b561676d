"""The suite's progress on the terminal: a line per point as it completes, with an estimate of what is left.

A hook plugin the suite's plugin registers for the session (``Progress``),
reading the session's ``Settings``: the points as collected, and those timed.
"""

from __future__ import annotations

import contextlib
import time

import pytest

# The progress line's pace: (elapsed + this) / (planned + this), the plan's until the points have run about this
# many seconds, theirs after; a compile or a slow first point does not stretch the estimate to hours.
ESTIMATE_WEIGHT = 10.0


def write_line(config: pytest.Config, line: str) -> None:
    """Write ``persample: line`` on the terminal now, also from inside a test whose output is captured."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        if terminal._tw.width_of_current_line:  # after -q's progress marks, which ensure_newline leaves alone
            terminal.write("\n")
        terminal.write_line(f"persample: {line}")


def remaining(elapsed: float, planned: float, left: float) -> float:
    """Seconds left, from the plan's seconds ``left`` at the pace of the points so far (``elapsed`` for
    ``planned``), weighted towards the plan while little has run (``ESTIMATE_WEIGHT``)."""
    return left * (elapsed + ESTIMATE_WEIGHT) / (planned + ESTIMATE_WEIGHT)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def measured(point, bench) -> str:
    """A timed point in a line: its median, its speedup where interleaved (a DP step's: its multiple of the
    non-private step's time), the precision reached and how."""
    from persample_bench.runformat import NONPRIVATE, baseline_of
    from persample_bench.summary import interleaved_speedup

    info, stats = bench.extra_info, bench.stats.stats
    text = f"{point.id} {stats.median * 1e3:.3g} ms"
    if "baseline_rounds" in info:
        speedup = interleaved_speedup(stats.data, info["baseline_rounds"])
        if baseline_of(point.method) == NONPRIVATE:
            text += f", {1 / speedup:.2f}x the {NONPRIVATE} step's time"
        else:
            text += f", {speedup:.2f}x the loop"
    target, cap = info["precision_target"], info["max_time"]
    missed = "" if info["resolved"] else f"; short of +-{target:.0%} (cap {cap:g} s)"
    return f"{text} +-{info['precision']:.1%} ({info['rounds']} rounds{missed})"


class Progress:
    """One line per point timed, as it completes: what it measured, how precisely, and about how long the rest
    takes (after pytest's own mark for the test)."""

    def __init__(self, settings):
        self.settings = settings

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report):
        settings = self.settings
        point = settings.points.get(report.nodeid)
        if report.when != "call" or point not in settings.records:
            return  # not a point, skipped, failed, or run once untimed (--benchmark-disable)
        order = list(settings.points.values())
        index = order.index(point) + 1
        elapsed = time.perf_counter() - settings.started
        spent, left = (sum(settings.cost(p) for p in part) for part in (order[:index], order[index:]))
        eta = f", about {minutes(remaining(elapsed, spent, left))} to go" if left else ""
        line = measured(point, settings.records[point])
        settings.progress(f"[{index}/{len(order)}] {line}  ({minutes(elapsed)} so far{eta})")
