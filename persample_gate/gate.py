"""The regression gate: point by point, is the candidate slower than the baseline?

Two metrics per point, each on raw samples:

- ``ratio``: the method's time over the loop's (lower is better; 1/speedup).
  For interleaved points the ratio is taken round by round, so drift of the
  machine cancels; otherwise each round is divided by the run's loop median.
- ``time``: the method's own seconds per call.

A point regresses only if the slowdown is statistically significant **and**
its estimate (the change of the medians) is at least the threshold: the
threshold is the slowdown that counts, as asv's ``--factor`` is. A
significant 2% drift does not fire; a slowdown measured at 10% against a 10%
threshold does, however noisy or quiet the point (an earlier rule, "the
interval reaches the threshold", flagged a noisy point for a smaller estimated
slowdown than a quiet one: docs/studies/2026-12-04-threshold-rule.md).

Significant means against two kinds of noise, both (the larger p counts):

- within the runs: one-sided Mann-Whitney U on the rounds, with a
  bootstrap interval of the change of the medians;
- between runs: two processes of unchanged code differ by more than their
  rounds say (docs/studies/2026-11-28-sensitivity-trials.md). That
  spread is estimated from the runs stored before the candidate on the same
  hardware and settings (at least ``MIN_HISTORY``): the root mean square of
  the successive differences of their log medians (von Neumann's mean square
  successive difference; each difference is one change between two runs, and
  a real change in the history only makes the gate more cautious). The
  change is then a t-score against it, on the estimate's degrees of freedom,
  so that a spread known from a few runs is not trusted like a known one
  (a z-score would flag unchanged code above alpha, see
  ``test_false_alarms_stay_at_alpha_when_the_spread_is_learnt_from_few_runs``
  in tests/test_gate.py). With fewer stored runs the rounds are all there is,
  and the output says so.

Every method is also judged on all its points together (``Pooled``): the
geometric mean of its metric over the points both runs have, each point
weighted by 1 / (its spread between runs)^2, tested against the spread of that
mean between the stored runs. A slowdown of the method's own code shows at
every point, while the noise of different points is largely independent, so
the mean resolves what no single point can; the weights are what a common
relative slowdown is best estimated with when points differ in noise by tens
of times, as a sweep's do (docs/studies/2026-11-28-stored-sweeps.md; equal
weights let the noisiest point set the mean's spread). A change at a few
points only is left to the points' own rows. The mean is tested only once
the spreads are known (``MIN_HISTORY`` runs with all its points): its rounds
come from different points and say nothing of it on their own.

The verdict is on all the rows together: a run of the full sweep has hundreds,
and at p < alpha each, some of them would flag unchanged code in most
comparisons (``test_the_gate_holds_false_alarms_to_alpha_over_all_its_rows``
in tests/test_gate.py). So each row's p is adjusted for all the rows compared
(weighted Holm), and a row regresses when its adjusted p < alpha: the chance
that any row flags unchanged code is then at most alpha, however the rows
depend on each other. The methods' pooled speedup rows share ``PRIMARY_SHARE``
of alpha, every other row the rest: a slowdown of a method's code is resolved
on its pooled speedup, the suite's question and the one metric its
interleaved rounds keep free of the machine's drift; a single point, or a
time that moves with the machine between runs, resolves only slowdowns large
enough to show at any alpha. Why each choice, and what was measured: docs/gate.md.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from persample_bench.runformat import NONPRIVATE, is_dp
from persample_bench.summary import render

METRICS = ("ratio", "time")
SHOWN_AS = {"ratio": "speedup", "time": "time"}  # the ratio is shown as the speedup users know
MIN_HISTORY = 5  # stored runs needed to estimate the noise between runs
# Until MIN_HISTORY runs are stored, the noise between runs is unknown and a row's p rests on one run's rounds,
# which cannot tell a slowdown from a process that happened to be slower: no verdict, but for a speedup worse by
# more than this whose whole interval lies beyond it, which no unchanged pair of runs has come near
# (docs/studies/2026-12-02-adaptive-rounds.md).
GROSS = 1.0
DEFAULT_THRESHOLDS = {"ratio": 0.10, "time": 0.10}
DEFAULT_ALPHA = 0.01
# SciPy 1.15 renamed bootstrap's random_state to rng (SPEC 7); older releases know only random_state.
_BOOTSTRAP_RNG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
PRIMARY_SHARE = 0.75  # of alpha, spent on the pooled speedup rows when there are any; the rest on the other rows


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


@dataclass(frozen=True, order=True)
class Pooled:
    """All the points of one method on one device that both runs have, taken together by their geometric mean,
    each weighted by 1 / (its spread between runs)^2 (``weighted``), or alike."""

    method: str
    device: str
    points: int
    weights: tuple = field(default=(), compare=False)  # (point id, weight), heaviest first
    weighted: bool = field(default=True, compare=False)

    @property
    def id(self) -> str:
        return f"{self.method}-{self.device} ({'weighted ' if self.weighted else ''}geomean of {self.points})"


@dataclass(frozen=True)
class Change:
    """One metric at one point (a ``Point``, or a method's ``Pooled`` points), before and after."""

    point: object
    metric: str
    before: float  # median
    after: float
    change: float  # after / before - 1
    low: float  # 95% interval of change
    high: float
    p_value: float  # over all the rows compared (``compare_runs``), else the row's own
    regressed: bool
    noise: float | None = None  # standard deviation of the log change between two unchanged runs
    p_row: float | None = None  # the row's own p, where ``p_value`` is over all the rows


def ratio_samples(run, point) -> np.ndarray | None:
    """The method's time over the baseline's (the loop's), one value per round."""
    if point.method in (run.baseline, run.floor):
        return None
    samples = np.asarray(run.samples[point])
    if point in run.baseline_rounds:
        return samples / np.asarray(run.baseline_rounds[point])
    loop = run.samples.get(replace(point, method=run.baseline))
    return None if loop is None else samples / np.median(loop)


def _median_ratio(before, after, axis=-1):
    return np.median(after, axis=axis) / np.median(before, axis=axis) - 1


def _series(run, point) -> dict:
    """The samples each metric is tested on at ``point``; None where a metric does not apply."""
    return {"ratio": ratio_samples(run, point), "time": run.samples.get(point)}


def _log_medians(run) -> dict:
    """``{(point, metric): log of the median}`` of every series ``run`` has."""
    return {
        (point, metric): float(np.log(np.median(samples)))
        for point in run.samples
        for metric, samples in _series(run, point).items()
        if samples is not None
    }


def _successive_rms(logs) -> np.ndarray:
    """The root mean square of the differences of successive runs' ``logs`` (runs first, in order)."""
    return np.sqrt(np.mean(np.diff(logs, axis=0) ** 2, axis=0))


def _spread(logs) -> Spread | None:
    """The RMS of successive differences of ``logs`` (one value per run, in order); None below ``MIN_HISTORY`` runs."""
    return Spread(float(_successive_rms(logs)), len(logs)) if len(logs) >= MIN_HISTORY else None


def noise_between_runs(history) -> dict:
    """``{(point, metric): Spread}``: how far apart two unchanged runs lie, from runs stored in order.

    The spread is the standard deviation of the log change between two runs,
    the root mean square of the differences of successive runs' log medians.
    Only where at least ``MIN_HISTORY`` runs have the point.
    """
    return _noise([_log_medians(run) for run in history])


def _noise(earlier: list[dict]) -> dict:
    """``noise_between_runs`` from the runs' ``_log_medians``, oldest first."""
    values = {}
    for logs in earlier:
        for key, log in logs.items():
            values.setdefault(key, []).append(log)
    return {key: spread for key, logs in values.items() if (spread := _spread(logs))}


def _between_runs(change: float, noise: Spread) -> tuple[float, float, float]:
    """(p, low, high) of ``change`` tested against the spread between unchanged runs: Student's t on its df."""
    shift, reach = np.log1p(change), float(stats.t.ppf(0.975, noise.df)) * noise.sd
    return float(stats.t.sf(shift / noise.sd, noise.df)), float(np.expm1(shift - reach)), float(np.expm1(shift + reach))


def regressed(p_value: float, change: float, *, threshold: float, alpha: float = DEFAULT_ALPHA) -> bool:
    """The gate's rule: significant, and the estimated slowdown ``change`` at least ``threshold``."""
    return bool(p_value < alpha and change >= threshold)


def compare_samples(
    before, after, *, threshold: float, alpha: float = DEFAULT_ALPHA, noise: Spread | None = None, seed: int = 0
):
    """(change, low, high, p, regressed) for two sets of rounds where larger is worse.

    ``noise``: the spread between unchanged runs (``noise_between_runs``);
    then the change must be significant against it as well (Student's t on
    the spread's degrees of freedom), and the interval is the wider of the two.
    """
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    change = float(_median_ratio(before, after))
    p_value = float(stats.mannwhitneyu(after, before, alternative="greater").pvalue)
    if len(before) > 1 and len(after) > 1:
        interval = stats.bootstrap(
            (before, after),
            _median_ratio,
            n_resamples=2000,
            method="percentile",
            vectorized=True,
            **{_BOOTSTRAP_RNG: np.random.default_rng(seed)},
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
    else:
        low = high = change
    if noise and noise.sd:  # (copies of one run in the history have no spread to test against)
        p_runs, low_runs, high_runs = _between_runs(change, noise)
        p_value, low, high = max(p_value, p_runs), min(low, low_runs), max(high, high_runs)
    return change, low, high, p_value, regressed(p_value, change, threshold=threshold, alpha=alpha)


def _weights(logs: np.ndarray) -> np.ndarray | None:
    """Each point's weight in its method's mean: 1 / (its spread between runs)^2, from ``logs`` (runs x points),
    summing to 1; None when a point has no spread (copies of one run)."""
    spreads = _successive_rms(logs)
    if not spreads.all():
        return None
    weights = spreads**-2.0
    return weights / weights.sum()


def _pooled_spread(logs: np.ndarray) -> Spread | None:
    """The spread between runs of the weighted mean of ``logs`` (runs x points, ``MIN_HISTORY`` runs or more).

    Each change between successive runs is weighted as learnt from the other
    runs, so that no change is judged with weights drawn from itself. Weights
    learnt from all the runs favour the points that happened to be quiet in
    them, and the mean's spread comes out too small, which flags unchanged
    code above alpha (tests/test_gate.py,
    ``test_the_weighted_mean_keeps_false_alarms_at_alpha_when_points_differ_in_noise``).
    """
    changes = []
    for t in range(len(logs) - 1):
        weights = _weights(np.delete(logs, [t, t + 1], axis=0))
        if weights is None:
            return None
        changes.append((logs[t + 1] - logs[t]) @ weights)
    return Spread(float(np.sqrt(np.mean(np.square(changes)))), len(logs))


def compare_pooled(baseline, candidate, *, earlier: list[dict], metrics) -> list[Change]:
    """Each method's weighted geometric mean over its points (two or more) on a device, where the runs stored
    before (``earlier``: their ``_log_medians``, oldest first) know the points' spreads and the mean's; not yet
    judged (``regressed`` False): ``compare_runs`` judges it with all the rows."""
    before, after = _log_medians(baseline), _log_medians(candidate)
    groups = {}
    for point, metric in sorted(before.keys() & after.keys()):
        if metric in metrics:
            groups.setdefault((point.method, point.where, metric), []).append((point, metric))
    changes = []
    for (method, device, metric), keys in groups.items():
        if len(keys) < 2:
            continue  # the mean of one point is the point's own row
        stored = np.array([[logs[key] for key in keys] for logs in earlier if logs.keys() >= set(keys)])
        if len(stored) < MIN_HISTORY or (weights := _weights(stored)) is None:
            continue
        noise = _pooled_spread(stored)
        if not (noise and noise.sd):
            continue
        log_before, log_after = (np.array([logs[key] for key in keys]) @ weights for logs in (before, after))
        change = float(np.expm1(log_after - log_before))
        p_value, low, high = _between_runs(change, noise)
        shares = tuple(sorted(((point.id, float(w)) for (point, _), w in zip(keys, weights)), key=lambda s: -s[1]))
        changes.append(
            Change(
                point=Pooled(method, device, len(keys), shares),
                metric=metric,
                before=float(np.exp(log_before)),
                after=float(np.exp(log_after)),
                change=change,
                low=low,
                high=high,
                p_value=p_value,
                regressed=False,
                noise=noise.sd,
            )
        )
    return changes


def holm(p_values, weights) -> np.ndarray:
    """Weighted Holm adjusted p-values (Holm 1979): rows significant at ``adjusted < alpha`` include an unchanged
    one with probability at most alpha, whatever their dependence.

    Step down from the smallest ``p / weight``: a row is significant while
    its p < alpha x its weight / the weight of the rows not yet significant,
    so the share of each row found significant passes on to the others.
    """
    p, weights = np.asarray(p_values, dtype=float), np.asarray(weights, dtype=float)
    order = np.argsort(p / weights, kind="stable")
    left = np.cumsum(weights[order][::-1])[::-1]  # the weight of the rows not yet significant, step by step
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(p[order] / weights[order] * left))
    return adjusted


def primary(change: Change) -> bool:
    """A method's pooled speedup row: where the gate spends most of alpha."""
    return isinstance(change.point, Pooled) and change.metric == "ratio"


def family_weights(changes: list[Change]) -> np.ndarray:
    """Each row's share of alpha: ``PRIMARY_SHARE`` split evenly among the ``primary`` rows, the rest among the
    other rows (all of it, where one kind is missing)."""
    primary_rows = np.array([primary(c) for c in changes])
    shares = (
        {True: PRIMARY_SHARE, False: 1 - PRIMARY_SHARE}
        if 0 < primary_rows.sum() < len(changes)
        else {True: 1, False: 1}
    )
    return np.array([shares[kind] / np.sum(primary_rows == kind) for kind in primary_rows])


def compare_runs(
    baseline, candidate, *, thresholds=None, alpha: float = DEFAULT_ALPHA, history=(), metrics=METRICS
) -> list[Change]:
    """Each of ``metrics`` at every point both runs have, and pooled per method, judged on p adjusted for all
    these rows (``judge``); regressions first, pooled rows first among them, then by point.

    ``history``: runs stored before the candidate, oldest first, timed like
    the baseline, for the noise between runs; with fewer than ``MIN_HISTORY``
    only a gross slowdown is called.
    """
    changes = rows(baseline, candidate, history=history, metrics=metrics)
    return judge(changes, thresholds=thresholds, alpha=alpha, gross_only=len(history) < MIN_HISTORY)


def rows(baseline, candidate, *, history=(), metrics=METRICS) -> list[Change]:
    """The rows ``compare_runs`` judges: each of ``metrics`` at every point both runs have, and each method's
    pooled rows, with each row's own p."""
    earlier = [_log_medians(run) for run in history]  # read once, for the points' spreads and the pooled ones
    noise = _noise(earlier)
    changes = []
    for point in sorted(baseline.samples.keys() & candidate.samples.keys()):
        series = zip(_series(baseline, point).items(), _series(candidate, point).values())
        for (metric, before), after in series:
            if metric not in metrics or before is None or after is None:
                continue
            spread = noise.get((point, metric))
            change, low, high, p_value, _ = compare_samples(  # judged with all the rows, in ``judge``
                before, after, threshold=DEFAULT_THRESHOLDS[metric], noise=spread
            )
            changes.append(
                Change(
                    point=point,
                    metric=metric,
                    before=float(np.median(before)),
                    after=float(np.median(after)),
                    change=change,
                    low=low,
                    high=high,
                    p_value=p_value,
                    regressed=False,
                    noise=spread and spread.sd,
                )
            )
    return changes + compare_pooled(baseline, candidate, earlier=earlier, metrics=metrics)


def judge(changes: list[Change], *, thresholds, alpha: float = DEFAULT_ALPHA, gross_only=False) -> list[Change]:
    """``changes`` judged together: each row's p adjusted for all of them (``holm``), a regression where that is
    below ``alpha`` and the estimated slowdown at least the row's threshold (``regressed``); with ``gross_only``, only a
    speedup worse by ``GROSS`` at least, over its whole interval. Regressions first, pooled rows first among them.
    """
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    if changes:
        adjusted = holm([c.p_value for c in changes], family_weights(changes))
        changes = [
            replace(
                c,
                p_value=float(p),
                p_row=c.p_value,
                regressed=regressed(p, c.change, threshold=thresholds[c.metric], alpha=alpha)
                and (not gross_only or (c.metric == "ratio" and c.low >= GROSS)),
            )
            for c, p in zip(changes, adjusted)
        ]
    return sorted(changes, key=lambda c: (not c.regressed, not isinstance(c.point, Pooled), c.point, c.metric))


def shown_as(change: Change) -> str:
    """What a row's metric is called: a DP step's ratio is its multiple of the non-private time, as DP's costs are
    read; any other ratio is shown as the speedup users know."""
    if change.metric == "ratio" and is_dp(change.point.method):
        return f"x {NONPRIVATE}"
    return SHOWN_AS[change.metric]


def _shown(change: Change, value: float) -> str:
    if change.metric != "ratio":
        return f"{value * 1e3:.3g} ms"
    return f"{value:.2f}x" if is_dp(change.point.method) else f"{1 / value:.2f}x"  # the speedup: loop / method


def _p(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 else f"{value:.0e}"


def format_changes(changes: list[Change]) -> str:
    header = (
        "point",
        "metric",
        "before",
        "after",
        "change",
        "95% interval",
        "run to run",
        "p",
        "p, all rows",
        "verdict",
    )
    rows = [
        (
            c.point.id,
            shown_as(c),
            _shown(c, c.before),
            _shown(c, c.after),
            f"{c.change:+.1%}",
            f"[{c.low:+.1%}, {c.high:+.1%}]",
            "-" if c.noise is None else f"±{c.noise:.1%}",
            "-" if c.p_row is None else _p(c.p_row),
            _p(c.p_value),
            "REGRESSION" if c.regressed else "ok",
        )
        for c in changes
    ]
    return render(header, rows, left=len(header))
