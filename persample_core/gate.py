"""The regression gate: point by point, is the candidate slower than the baseline?

Two metrics per point, each on raw samples:

- ``ratio``: the method's time over the loop's (lower is better; 1/speedup).
  For interleaved points the ratio is taken round by round, so drift of the
  machine cancels; otherwise each round is divided by the run's loop median.
- ``time``: the method's own seconds per call.

A point regresses only if the slowdown is statistically significant **and**
its 95% interval reaches the threshold, i.e. a slowdown of threshold size
cannot be ruled out. A significant 2% drift does not fire; a slowdown measured
at 10% against a 10% threshold does.

Significant means against two kinds of noise, both:

- within the runs: one-sided Mann-Whitney U on the rounds (p < alpha), with a
  bootstrap interval of the change of the medians;
- between runs: two processes of unchanged code differ by more than their
  rounds say (on this project's shared machine, 2-4% in the speedup). That
  spread is estimated from the runs stored before the candidate on the same
  hardware and settings (at least ``MIN_HISTORY``): the root mean square of
  the successive differences of their log medians (von Neumann's mean square
  successive difference; each difference is one change between two runs, and
  a real change in the history only makes the gate more cautious). The
  change is then a t-score against it, on the estimate's degrees of freedom,
  so that a spread known from a few runs is not trusted like a known one
  (a z-score on 10 stored runs cries wolf three times as often as it
  should). With fewer stored runs the rounds are all there is, and the
  output says so.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from persample_core.methods import BASELINE
from persample_core.report import render
from persample_core.suite import FLOOR

METRICS = ("ratio", "time")
MIN_HISTORY = 5  # stored runs needed to estimate the noise between runs
DEFAULT_THRESHOLDS = {"ratio": 0.10, "time": 0.10}
DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class Spread:
    """How far apart two unchanged runs lie: the standard deviation of their log change, estimated from ``runs``."""

    sd: float
    runs: int

    @property
    def df(self) -> float:
        """Degrees of freedom of the mean square successive difference of ``runs`` values.

        The sum of n - 1 squared successive differences has variance
        (12n - 16) sigma^4 (neighbouring differences share a run), which a
        scaled chi-square matches with 2 (n - 1)^2 / (3n - 4) degrees of freedom.
        """
        return 2 * (self.runs - 1) ** 2 / (3 * self.runs - 4)


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
    noise: float | None = None  # standard deviation of the log change between two unchanged runs


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


def _series(run, point) -> dict:
    """The samples each metric is tested on at ``point``; None where a metric does not apply."""
    return {"ratio": ratio_samples(run, point), "time": run.samples.get(point)}


def noise_between_runs(history) -> dict:
    """``{(point, metric): Spread}``: how far apart two unchanged runs lie, from runs stored in order.

    The spread is the standard deviation of the log change between two runs,
    the root mean square of the differences of successive runs' log medians.
    Only where at least ``MIN_HISTORY`` runs have the point.
    """
    values = {}
    for run in history:
        for point in run.samples:
            for metric, samples in _series(run, point).items():
                if samples is not None:
                    values.setdefault((point, metric), []).append(np.log(np.median(samples)))
    return {key: Spread(float(np.sqrt(np.mean(np.diff(logs) ** 2))), len(logs)) for key, logs in values.items()
            if len(logs) >= MIN_HISTORY}


def compare_samples(before, after, *, threshold: float, alpha: float = DEFAULT_ALPHA, noise: Spread | None = None,
                    seed: int = 0):
    """(change, low, high, p, regressed) for two sets of rounds where larger is worse.

    ``noise``: the spread between unchanged runs (``noise_between_runs``);
    then the change must be significant against it as well (Student's t on
    the spread's degrees of freedom), and the interval is the wider of the two.
    """
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    change = float(_median_ratio(before, after))
    p_value = float(stats.mannwhitneyu(after, before, alternative="greater").pvalue)
    if len(before) > 1 and len(after) > 1:
        interval = stats.bootstrap((before, after), _median_ratio, n_resamples=2000, method="percentile",
                                   vectorized=True, rng=np.random.default_rng(seed)).confidence_interval
        low, high = float(interval.low), float(interval.high)
    else:
        low = high = change
    if noise and noise.sd:  # (copies of one run in the history have no spread to test against)
        shift, reach = np.log1p(change), float(stats.t.ppf(0.975, noise.df)) * noise.sd
        p_value = max(p_value, float(stats.t.sf(shift / noise.sd, noise.df)))
        low, high = min(low, float(np.expm1(shift - reach))), max(high, float(np.expm1(shift + reach)))
    return change, low, high, p_value, bool(p_value < alpha and high >= threshold)


def compare_runs(baseline, candidate, *, thresholds=None, alpha: float = DEFAULT_ALPHA, history=(),
                 metrics=METRICS) -> list[Change]:
    """Each of ``metrics`` at every point both runs have; regressions first, then by point.

    ``history``: runs stored before the candidate, oldest first, timed like
    the baseline, for the noise between runs.
    """
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    noise = noise_between_runs(history)
    changes = []
    for point in sorted(baseline.samples.keys() & candidate.samples.keys()):
        series = zip(_series(baseline, point).items(), _series(candidate, point).values())
        for (metric, before), after in series:
            if metric not in metrics or before is None or after is None:
                continue
            spread = noise.get((point, metric))
            change, low, high, p_value, regressed = compare_samples(
                before, after, threshold=thresholds[metric], alpha=alpha, noise=spread)
            changes.append(Change(point, metric, float(np.median(before)), float(np.median(after)),
                                  change, low, high, p_value, regressed, spread and spread.sd))
    return sorted(changes, key=lambda c: (not c.regressed, c.point, c.metric))


def _shown(change: Change, value: float) -> str:
    # A time ratio is shown as the speedup users know (loop time / method time).
    return f"{1 / value:.2f}x" if change.metric == "ratio" else f"{value * 1e3:.3g} ms"


def format_changes(changes: list[Change]) -> str:
    header = ("point", "metric", "before", "after", "change", "95% interval", "run to run", "p", "verdict")
    rows = [(c.point.id, "speedup" if c.metric == "ratio" else "time", _shown(c, c.before), _shown(c, c.after),
             f"{c.change:+.1%}", f"[{c.low:+.1%}, {c.high:+.1%}]", "-" if c.noise is None else f"±{c.noise:.1%}",
             f"{c.p_value:.3f}", "REGRESSION" if c.regressed else "ok") for c in changes]
    return render(header, rows, left=len(header))
