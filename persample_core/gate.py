"""The regression gate: point by point, is the candidate slower than the baseline?

Two metrics per point, each on raw samples:

- ``ratio``: the method's time over the loop's (lower is better; 1/speedup).
  For interleaved points the ratio is taken round by round, so drift of the
  machine cancels; otherwise each round is divided by the run's loop median.
- ``time``: the method's own seconds per call.

A point regresses only if the slowdown is statistically significant
(one-sided Mann-Whitney U on the rounds, p < alpha) **and** its 95% bootstrap
interval reaches the threshold, i.e. a slowdown of threshold size cannot be
ruled out. A significant 2% drift does not fire; a slowdown measured at 10%
against a 10% threshold does.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from persample_core.methods import BASELINE
from persample_core.report import render
from persample_core.suite import FLOOR

METRICS = ("ratio", "time")
DEFAULT_THRESHOLDS = {"ratio": 0.10, "time": 0.10}
DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class Change:
    """One metric at one point, before and after."""

    point: object
    metric: str
    before: float  # median
    after: float
    change: float  # after / before - 1
    low: float  # 95% interval of change
    high: float
    p_value: float
    regressed: bool


def ratio_samples(run, point) -> np.ndarray | None:
    """The method's time over the loop's, one value per round."""
    if point.method in (BASELINE, FLOOR):
        return None
    samples = np.asarray(run.samples[point])
    if point in run.baseline_rounds:
        return samples / np.asarray(run.baseline_rounds[point])
    loop = run.samples.get(replace(point, method=BASELINE))
    return None if loop is None else samples / np.median(loop)


def _median_ratio(before, after, axis=-1):
    return np.median(after, axis=axis) / np.median(before, axis=axis) - 1


def compare_samples(before, after, *, threshold: float, alpha: float = DEFAULT_ALPHA, seed: int = 0):
    """(change, low, high, p, regressed) for two sets of rounds where larger is worse."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    change = float(_median_ratio(before, after))
    p_value = float(stats.mannwhitneyu(after, before, alternative="greater").pvalue)
    if len(before) > 1 and len(after) > 1:
        interval = stats.bootstrap((before, after), _median_ratio, n_resamples=2000, method="percentile",
                                   vectorized=True, rng=np.random.default_rng(seed)).confidence_interval
        low, high = float(interval.low), float(interval.high)
    else:
        low = high = change
    return change, low, high, p_value, bool(p_value < alpha and high >= threshold)


def compare_runs(baseline, candidate, *, thresholds=None, alpha: float = DEFAULT_ALPHA) -> list[Change]:
    """Every metric at every point both runs have; regressions first, then by point."""
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    changes = []
    for point in sorted(baseline.samples.keys() & candidate.samples.keys()):
        series = {"ratio": (ratio_samples(baseline, point), ratio_samples(candidate, point)),
                  "time": (baseline.samples[point], candidate.samples[point])}
        for metric in METRICS:
            before, after = series[metric]
            if before is None or after is None:
                continue
            change, low, high, p_value, regressed = compare_samples(
                before, after, threshold=thresholds[metric], alpha=alpha)
            changes.append(Change(point, metric, float(np.median(before)), float(np.median(after)),
                                  change, low, high, p_value, regressed))
    return sorted(changes, key=lambda c: (not c.regressed, c.point, c.metric))


def _shown(change: Change, value: float) -> str:
    # A time ratio is shown as the speedup users know (loop time / method time).
    return f"{1 / value:.2f}x" if change.metric == "ratio" else f"{value * 1e3:.3g} ms"


def format_changes(changes: list[Change]) -> str:
    header = ("point", "metric", "before", "after", "change", "95% interval", "p", "verdict")
    rows = [(c.point.id, "speedup" if c.metric == "ratio" else "time", _shown(c, c.before), _shown(c, c.after),
             f"{c.change:+.1%}", f"[{c.low:+.1%}, {c.high:+.1%}]", f"{c.p_value:.3f}",
             "REGRESSION" if c.regressed else "ok") for c in changes]
    return render(header, rows, left=len(header))
