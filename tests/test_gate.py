"""The regression gate's statistics, on simulated samples (the command on recorded runs: test_cli.py)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from persample_bench.runformat import Point
from persample_gate import gate, history
from persample_gate.ab import DEFAULT_POINTS


def lognormal(median, n, seed, spread=0.05):
    return median * np.exp(np.random.default_rng(seed).normal(0, spread, n))


@pytest.mark.parametrize("seed", range(5))
def test_a_20_percent_slowdown_is_flagged(seed):
    change, low, high, p, regressed = gate.compare_samples(
        lognormal(1.0, 10, seed), lognormal(1.2, 10, seed + 100), threshold=0.1
    )
    assert regressed and p < 0.01 and low < change < high and change == pytest.approx(0.2, abs=0.06)


@pytest.mark.parametrize("seed", range(5))
def test_same_distribution_is_not_flagged(seed):
    *_, regressed = gate.compare_samples(lognormal(1.0, 10, seed), lognormal(1.0, 10, seed + 100), threshold=0.1)
    assert not regressed


def test_a_significant_but_small_change_is_not_flagged():
    change, low, high, p, regressed = gate.compare_samples(
        lognormal(1.0, 200, 1, 0.01), lognormal(1.02, 200, 2, 0.01), threshold=0.1
    )
    assert p < 0.01 and high < 0.1 and not regressed


def _run(name, offset, point, seed, spread=0.01):
    """A stored run whose loop rounds sit at 1 and vmap's at 0.25 x exp(offset): a shift of the whole run."""
    loop = lognormal(1.0, 30, seed, spread)
    vmap = loop * 0.25 * np.exp(offset) * lognormal(1.0, 30, seed + 1000, spread)
    return history.Run(Path(name), {}, "", {point: list(vmap)}, {point: list(loop)})


POINT = Point("mlp", "vmap", 64, "cpu")


def test_noise_between_runs_is_estimated_from_successive_stored_runs():
    offsets = np.random.default_rng(7).normal(0, 0.05, 40)  # whole runs shift by 5% (sd) from one to the next
    runs = [_run(f"r{i}", offset, POINT, i) for i, offset in enumerate(offsets)]
    noise = gate.noise_between_runs(runs)[(POINT, "ratio")]
    assert 0.05 < noise.sd < 0.1 and noise.runs == 40  # the change between two runs: sqrt(2) x 5%, about 7%
    assert (POINT, "ratio") not in gate.noise_between_runs(runs[: gate.MIN_HISTORY - 1])


def test_false_alarms_stay_at_alpha_when_the_spread_is_learnt_from_few_runs():
    """Unchanged runs whose level moves by 3% from run to run; the spread is learnt from 10 of them.

    The gate then flags about alpha (1%) of the candidates. Taken as known (a
    z-score on the same estimate), a spread learnt from 10 runs is too often
    too small by chance, and 3.3% are flagged.
    """
    rng, trials, flagged = np.random.default_rng(11), 2000, 0
    for _ in range(trials):
        logs = rng.normal(0, 0.03, 12)  # 10 stored runs, then the baseline and the candidate
        noise = gate.Spread(float(np.sqrt(np.mean(np.diff(logs[:10]) ** 2))), 10)
        # Rounds so precise that on them alone any shift is significant: the spread between runs decides.
        before, after = (np.exp(level + rng.normal(0, 1e-4, 20)) for level in logs[10:])
        *_, regressed = gate.compare_samples(before, after, threshold=0.0, noise=noise)
        flagged += regressed
    assert flagged / trials < 0.015, f"{flagged} false alarms in {trials}"


def test_a_shift_within_the_noise_between_runs_is_not_flagged_but_a_larger_one_is():
    history = [_run(f"r{i}", offset, POINT, i) for i, offset in enumerate(np.random.default_rng(7).normal(0, 0.08, 12))]
    baseline, shifted, slowed = _run("a", 0.0, POINT, 100), _run("b", 0.12, POINT, 200), _run("c", 0.5, POINT, 300)

    def verdict(candidate, runs):
        return next(c for c in gate.compare_runs(baseline, candidate, history=runs) if c.metric == "ratio")

    rounds_alone = verdict(shifted, [])  # 12% with 1% noise per round: certain on the rounds, no verdict yet
    assert rounds_alone.p_value < 0.01 and rounds_alone.low > 0.1 and not rounds_alone.regressed
    alone, known = verdict(shifted, history), verdict(slowed, history)
    assert not alone.regressed and alone.p_value > 0.01 and alone.noise > 0.06
    assert known.regressed and known.low > 0.3


POINTS = list(DEFAULT_POINTS)  # the points persample ab and sensitivity judge by default


def _runs(name, offsets, seed):
    """A stored run with a ``_run`` at each of ``POINTS``, shifted by its own offset."""
    parts = [_run(name, offset, point, seed + 10 * k) for k, (point, offset) in enumerate(zip(POINTS, offsets))]
    return history.Run(
        Path(name),
        {},
        "",
        {p: v for part in parts for p, v in part.samples.items()},
        {p: v for part in parts for p, v in part.baseline_rounds.items()},
    )


def test_the_geometric_mean_of_a_methods_points_catches_what_no_single_point_can():
    """Every point shifts by 5% (sd) on its own from run to run; vmap slowed by 15% at all four points.

    At each point alone 15% is about two of its spreads between runs: flagged
    now and then (11 of 80 here at p < alpha each; 1 of 80 with a quarter of
    alpha shared by the four, as the gate does). In their geometric mean the
    points' noise half cancels and the slowdown stands out: flagged with 15
    of twenty histories of twelve runs. (Equal noise is where the weights
    cost: learnt from twelve runs they are noisy, and equal weights flag all
    twenty; where points differ in noise, as a real sweep's do, they gain:
    the test below.)
    """
    caught, points_caught = 0, 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        stored = [_runs(f"r{i}", rng.normal(0, 0.05, 4), 100 * i) for i in range(12)]
        offsets = rng.normal(0, 0.05, 4)
        changes = gate.compare_runs(
            _runs("a", offsets, 5000), _runs("c", offsets + np.log(1.15), 7000), history=stored, metrics=("ratio",)
        )
        pooled = [c for c in changes if isinstance(c.point, gate.Pooled)]
        assert [c.point.id for c in pooled] == ["vmap-cpu (weighted geomean of 4)"] and len(changes) == 5
        assert pooled[0].change == pytest.approx(0.15, abs=0.01)
        assert pooled[0].noise < np.mean([c.noise for c in changes if c not in pooled])
        caught += pooled[0].regressed
        points_caught += sum(c.regressed for c in changes if c not in pooled)
        if pooled[0].regressed:
            assert changes[0] == pooled[0], "the pooled row leads the regressions"
    assert caught >= 14 and points_caught <= 4, (caught, points_caught)


# How much one run's speedup varied (standard deviation) at the full sweep's 14 vmap points up to B = 256 over
# its first 7 runs in docs/studies/2026-11-28-stored-sweeps.md.
FULL_SWEEP_SPREADS = np.array([2.9, 4.0, 2.7, 2.7, 3.3, 0.9, 1.9, 3.3, 2.5, 23, 0.46, 0.71, 4.1, 5.6]) / 100


@pytest.mark.parametrize("runs", [gate.MIN_HISTORY, 8, 20])
def test_the_weighted_mean_keeps_false_alarms_at_alpha_when_points_differ_in_noise(runs):
    """Weights learnt from the stored runs favour the points that happened to be quiet in them: the mean's
    spread learnt with those same weights comes out small, and lets through 1.4-2.5% of unchanged pairs at a
    nominal 1%. Each change weighted as learnt from the other runs keeps them at or below 1%, and a 5% slowdown
    of every point is caught in most pairs."""
    rng, trials, flagged, naive_flagged, caught = np.random.default_rng(3), 3000, 0, 0, 0
    for _ in range(trials):
        stored, candidate = rng.normal(0, FULL_SWEEP_SPREADS, (runs, 14)), rng.normal(0, FULL_SWEEP_SPREADS)
        weights, noise = gate._weights(stored), gate._pooled_spread(stored)
        naive = gate._spread(stored @ weights)
        change = float(np.expm1((candidate - stored[-1]) @ weights))  # the baseline is the newest stored run
        flagged += gate._between_runs(change, noise)[0] < gate.DEFAULT_ALPHA
        naive_flagged += gate._between_runs(change, naive)[0] < gate.DEFAULT_ALPHA
        caught += gate._between_runs((1 + change) * 1.05 - 1, noise)[0] < gate.DEFAULT_ALPHA
    assert flagged / trials < 0.012 < naive_flagged / trials and caught / trials > 0.6, (flagged, naive_flagged, caught)


def test_holm_adjusts_each_p_for_all_the_rows_and_passes_on_the_share_of_rows_found_significant():
    # Equal weights: Holm's (m - k + 1) p of the k-th smallest, kept increasing.
    assert np.allclose(gate.holm([0.01, 0.04, 0.03, 0.005], [0.25] * 4), [0.03, 0.06, 0.06, 0.02])
    # A pooled row with half of alpha and three points a sixth each: the point at p = 0.002 alone would need
    # p < alpha / 6, and is significant at alpha = 0.01 once the pooled row is, whose half passes on to it.
    assert np.allclose(gate.holm([0.004, 0.002, 0.3, 0.5], [0.5] + [0.5 / 3] * 3), [0.008, 0.008, 0.6, 0.6])


def test_the_gate_holds_false_alarms_to_alpha_over_all_its_rows():
    """The quick sweep's rows on CPU: 144 points (speedup and time), 5 pooled speedup rows and 7 pooled times, all
    unchanged (their p uniform). At p < alpha each, four comparisons in five would flag one; adjusted, at most
    alpha of them."""
    point = gate.Change(POINT, "ratio", 1.0, 1.0, 0.0, -0.1, 0.1, 1.0, False)
    pooled = replace(point, point=gate.Pooled("vmap", "cpu", 12))
    changes = [point] * 144 + [replace(pooled, metric="time")] * 7 + [pooled] * 5
    weights = gate.family_weights(changes)
    assert weights.sum() == pytest.approx(1) and weights[-1] == pytest.approx(gate.PRIMARY_SHARE / 5)
    assert weights[0] == pytest.approx((1 - gate.PRIMARY_SHARE) / 151)
    p_values = np.random.default_rng(5).uniform(size=(4000, len(changes)))
    unadjusted = np.mean((p_values < gate.DEFAULT_ALPHA).any(axis=1))
    adjusted = np.mean([(gate.holm(p, weights) < gate.DEFAULT_ALPHA).any() for p in p_values])
    assert unadjusted > 0.7 and adjusted < 0.013, (unadjusted, adjusted)


def test_a_row_significant_alone_is_not_flagged_among_many():
    """One point's speedup slowed by 0.8% on rounds that vary by 1.4% (runs a and b, no history): p = 0.003 on
    its own, flagged where it is the only row; 0.02 among the eight rows of four points."""
    baseline, candidate = _runs("a", np.zeros(4), 12), _runs("b", np.array([0.008, 0, 0, 0]), 502)
    changes = gate.judge(gate.rows(baseline, candidate), thresholds={"ratio": 0.0, "time": 0.0})
    slowed = next(c for c in changes if c.point == POINTS[0] and c.metric == "ratio")
    assert slowed.p_row < gate.DEFAULT_ALPHA <= slowed.p_value and not slowed.regressed, slowed
    assert np.allclose([c.p_value for c in changes], gate.holm([c.p_row for c in changes], [1 / 8] * 8))
    alone = [
        history.Run(
            Path(run.name), {}, "", {POINTS[0]: run.samples[POINTS[0]]}, {POINTS[0]: run.baseline_rounds[POINTS[0]]}
        )
        for run in (baseline, candidate)
    ]
    assert gate.judge(gate.rows(*alone, metrics=("ratio",)), thresholds={"ratio": 0.0, "time": 0.0})[0].regressed


def test_the_geometric_mean_needs_two_points_and_the_spread_between_runs():
    rng = np.random.default_rng(4)
    stored = [_runs(f"r{i}", rng.normal(0, 0.05, 4), 100 * i) for i in range(12)]
    baseline, slowed = _runs("a", np.zeros(4), 5000), _runs("c", np.full(4, 0.5), 7000)

    def pooled(candidate, runs):
        return [c for c in gate.compare_runs(baseline, candidate, history=runs) if isinstance(c.point, gate.Pooled)]

    assert {(c.point.id, c.metric) for c in pooled(slowed, stored)} == {
        ("vmap-cpu (weighted geomean of 4)", "ratio"),
        ("vmap-cpu (weighted geomean of 4)", "time"),
    }
    assert pooled(slowed, stored[: gate.MIN_HISTORY - 1]) == []  # the rounds of four points say nothing of their mean
    one_point = history.Run(
        Path("one"), {}, "", {POINTS[0]: slowed.samples[POINTS[0]]}, {POINTS[0]: slowed.baseline_rounds[POINTS[0]]}
    )
    assert pooled(one_point, stored) == []  # the mean of one point is the point's own row


def test_with_too_little_history_only_a_gross_slowdown_of_the_speedup_is_called():
    """No noise between runs known yet: a speedup three times worse is called, twice as good as before or 60%
    worse is not, however certain the rounds, and no time row is, whatever its change."""
    baseline = _run("a", 0.0, POINT, 1)
    history = [_run(f"r{i}", 0.0, POINT, 10 + i) for i in range(gate.MIN_HISTORY - 1)]

    def judged(offset):
        return {c.metric: c for c in gate.compare_runs(baseline, _run("b", offset, POINT, 2), history=history)}

    gross, large = judged(np.log(3.0)), judged(np.log(1.6))
    assert gross["ratio"].regressed and gross["ratio"].low >= gate.GROSS
    assert not gross["time"].regressed and gross["time"].p_row < 1e-3
    assert not large["ratio"].regressed and large["ratio"].p_row < 1e-3


@pytest.mark.parametrize("stored", range(gate.MIN_HISTORY))
def test_unchanged_runs_never_fail_the_gate_before_the_noise_between_runs_is_known(stored):
    """Runs of unchanged code whose speedup moves by 10% (sd) from run to run, and their time by 20%, far more
    than their rounds say: with 0-4 runs stored, on the rounds alone, 300 such pairs each (1500 in all) are flagged
    0 times, where the rounds alone would flag about a quarter of them."""
    rng = np.random.default_rng(stored)
    flagged = rounds_alone = 0
    for trial in range(300):
        shifts = rng.normal(0, 0.10, stored + 2)
        runs = [_run(f"r{i}", shift, POINT, 10_000 * trial + i) for i, shift in enumerate(shifts)]
        changes = gate.rows(runs[-2], runs[-1], history=runs[:-2])
        flagged += any(c.regressed for c in gate.judge(changes, thresholds={}, gross_only=True))
        rounds_alone += any(c.regressed for c in gate.judge(changes, thresholds={}))
    assert flagged == 0 and rounds_alone > 50, rounds_alone
