"""The regression gate: statistics on samples, and the command on real stored runs."""

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from persample_gate import cli, gate, history
from persample_gate.runs import Point
from tests.conftest import UNCHANGED_RUNS, persample


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

    assert verdict(shifted, []).regressed  # the rounds alone: 12% with 1% noise per round is certain
    alone, known = verdict(shifted, history), verdict(slowed, history)
    assert not alone.regressed and alone.p_value > 0.01 and alone.noise > 0.06
    assert known.regressed and known.low > 0.3


POINTS = [
    Point("simple_cnn", "vmap", 8, "cpu"),
    Point("simple_cnn", "vmap", 32, "cpu"),
    Point("mlp", "vmap", 64, "cpu"),
    Point("tiny_transformer", "vmap", 64, "cpu"),
]


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
    changes = gate.compare_runs(baseline, candidate, thresholds={"ratio": 0.0, "time": 0.0})
    slowed = next(c for c in changes if c.point == POINTS[0] and c.metric == "ratio")
    assert slowed.p_row < gate.DEFAULT_ALPHA <= slowed.p_value and not slowed.regressed, slowed
    assert np.allclose([c.p_value for c in changes], gate.holm([c.p_row for c in changes], [1 / 8] * 8))
    alone = [
        history.Run(
            Path(run.name), {}, "", {POINTS[0]: run.samples[POINTS[0]]}, {POINTS[0]: run.baseline_rounds[POINTS[0]]}
        )
        for run in (baseline, candidate)
    ]
    assert gate.compare_runs(*alone, thresholds={"ratio": 0.0, "time": 0.0}, metrics=("ratio",))[0].regressed


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


def test_gate_flags_a_real_injected_slowdown(stored_runs):
    """vmap made 2x slower: its speedup and time regress, and are listed first.

    Absolute time is gated at 50%, as for the unchanged rerun below: the loop's
    and the floor's times drift by ~10% between processes on CI's shared cores,
    and would otherwise leave no "ok" row to order against.
    """
    code, out = persample("compare", stored_runs["base"], stored_runs["slowed"], "--threshold-time", "0.5")
    assert code == cli.REGRESSION, out
    verdicts = [
        (line.split()[0], line.split()[1], line.split()[-1]) for line in out.splitlines() if line.startswith("mlp-")
    ]
    assert ("mlp-vmap-B64-cpu", "speedup", "REGRESSION") in verdicts, out
    assert ("mlp-loop-B64-cpu", "time", "ok") in verdicts, out
    statuses = [verdict for *_, verdict in verdicts]
    assert statuses == sorted(statuses, key=lambda verdict: verdict != "REGRESSION"), "regressions come first"


def test_gate_reports_a_methods_points_together_first(stored_runs, tmp_path):
    """The stored runs with every point stored twice (as B=64 and B=65): each method has two points, and the
    slowed vmap's geometric mean over them leads the table; points are counted without the pooled rows."""
    for path in [*stored_runs["unchanged"], stored_runs["slowed"]]:
        data = json.loads(path.read_text())
        twins = json.loads(json.dumps(data["benchmarks"]))
        for twin in twins:
            twin["extra_info"]["batch_size"] = 65
        data["benchmarks"] += twins
        (tmp_path / path.name).write_text(json.dumps(data))
    code, out = persample(
        "compare",
        tmp_path / stored_runs["unchanged"][-1].name,
        tmp_path / stored_runs["slowed"].name,
        "--threshold-time",
        "0.5",
    )
    assert code == cli.REGRESSION and "'weighted geomean of N' rows: a method over its N points" in out, out
    # 12 rows: vmap's speedup at the two points, six times, vmap's pooled speedup and three pooled times
    assert "regression: p over all 12 rows < 0.01" in out and "pooled speedup rows share 75% of 0.01" in out, out
    rows = [line.split() for line in out.splitlines() if line.startswith(("mlp-", "vmap-", "loop-", "floor-"))]
    assert rows[0][:2] == ["vmap-cpu", "(weighted"] and rows[0][5] == "speedup" and rows[0][-1] == "REGRESSION", out
    assert {" ".join(row[:5]) for row in rows} >= {
        "loop-cpu (weighted geomean of 2)",
        "floor-cpu (weighted geomean of 2)",
    }, out
    assert "vmap-cpu (weighted geomean of 2), speedup: weighs most mlp-vmap-B6" in out, out  # twins: 50% each
    assert "in 6 common point(s)" in out, out


def test_gate_option_gates_the_run_in_progress(stored_runs):
    """``pytest --benchmark-only --gate``: the first run is the baseline, the slowed one fails the session."""
    assert (
        "no baseline yet" in stored_runs["first_gate"]
        and "is the baseline for the next run" in stored_runs["first_gate"]
    )
    report = stored_runs["slowed_gate"].split("persample gate", 1)[1]
    assert f"baseline  {stored_runs['unchanged'][-1]}" in report and f"candidate {stored_runs['slowed']}" in report
    assert any(
        line.startswith("mlp-vmap-B64-cpu") and "speedup" in line and "REGRESSION" in line
        for line in report.splitlines()
    ), report


def test_gate_passes_an_unchanged_rerun(stored_runs):
    """The last two of the unchanged runs, one process each, with the noise between runs known from the
    five stored up to the baseline: the speedup at the default 10%.

    On the rounds alone, a first comparison on a new machine, such pairs can be
    flagged: two processes differ by more than their rounds say. Absolute time
    is gated at 50% here: it carries the machine's drift between processes,
    which no ratio cancels (docs/studies/2026-11-28-sensitivity-trials.md).
    """
    *_, baseline, candidate = stored_runs["unchanged"]
    code, out = persample("compare", baseline, candidate, "--threshold-time", "0.5")
    assert code == cli.OK, out
    assert "from the 5 runs stored up to the baseline" in out and "0 regression(s) in 3 common point(s)" in out


def test_gate_passes_a_run_against_a_copy_of_itself(stored_runs, tmp_path):
    copy = tmp_path / "copy.json"
    copy.write_bytes(stored_runs["base"].read_bytes())
    code, out = persample("compare", stored_runs["base"], copy)
    assert code == cli.OK, out
    assert "0 regression(s) in 3 common point(s)" in out and "+0.0%" in out


def test_gate_by_saved_ids(stored_runs):
    storage = stored_runs["base"].parent.parent
    slowed = stored_runs["slowed"].name[:4]
    code, out = persample("--storage", storage, "compare", "0001", slowed)
    assert code == cli.REGRESSION and f"baseline  {stored_runs['base']}" in out and f"{slowed}_" in out


def test_no_baseline_yet_has_its_own_exit_code(tmp_path):
    code, out = persample("--storage", tmp_path, "compare")
    assert code == cli.NO_BASELINE
    assert "no baseline yet: 0 stored run(s)" in out


def test_corrupt_file_is_reported_by_name_and_left_alone(stored_runs, tmp_path):
    corrupt = tmp_path / "0009_truncated.json"
    corrupt.write_text(stored_runs["base"].read_text()[:500])
    before = corrupt.read_bytes()
    code, out = persample("compare", stored_runs["base"], corrupt)
    assert code == cli.BAD_INPUT
    assert f"{corrupt}: truncated or corrupt JSON" in out and "\n" not in out.strip()
    assert corrupt.read_bytes() == before


def test_a_run_without_raw_rounds_is_refused(stored_runs, tmp_path):
    stripped = json.loads(stored_runs["base"].read_text())
    del stripped["benchmarks"][0]["stats"]["data"]
    path = tmp_path / "stripped.json"
    path.write_text(json.dumps(stripped))
    code, out = persample("compare", stored_runs["base"], path)
    assert code == cli.BAD_INPUT and "not a persample run with raw rounds (missing 'data')" in out


@pytest.mark.parametrize(
    "changed, code, message",
    [
        (
            {"gpu_name": "NVIDIA H100 80GB HBM3", "gpu_count": 1},
            cli.OTHER_HARDWARE,
            "come from different hardware (gpu_name: None != 'NVIDIA H100 80GB HBM3'; gpu_count: 0 != 1)",
        ),
        (
            {"torch_threads": 2, "timer": "wall"},
            cli.BAD_INPUT,
            "were timed differently (torch_threads: 1 != 2; timer: 'cpu' != 'wall')",
        ),
    ],
    ids=["hardware", "settings"],
)
def test_runs_that_cannot_be_compared_are_refused_naming_the_fields(stored_runs, tmp_path, changed, code, message):
    other = json.loads(stored_runs["rerun"].read_text())
    other["machine_info"]["persample"].update(changed)
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    returned, out = persample("compare", stored_runs["base"], path)
    assert returned == code and message in out, out


def test_the_noise_between_runs_comes_from_the_runs_stored_up_to_the_baseline(stored_runs, tmp_path):
    folder = tmp_path / "AMD_EPYC--no-gpu" / "Linux-CPython"
    folder.mkdir(parents=True)
    for number in range(1, 7):
        source = stored_runs["base" if number % 2 else "rerun"]
        (folder / f"{number:04d}_run.json").write_bytes(source.read_bytes())
    code, out = persample("compare", folder / "0005_run.json", folder / "0006_run.json", "--threshold-time", "0.5")
    assert code == cli.OK and "from the 5 runs stored up to the baseline" in out, out
    assert "run to run" in out and "±" in out
    (folder / "0003_run.json").write_text("{")
    code, out = persample("compare", folder / "0005_run.json", folder / "0006_run.json", "--threshold-time", "0.5")
    assert "not known yet (4 comparable run(s) stored up to the baseline, 5 needed)" in out, out
    assert f"left out of the noise estimate, unreadable: {folder / '0003_run.json'}" in out
    assert (folder / "0003_run.json").read_text() == "{"


def test_unknown_saved_id(tmp_path):
    shutil.rmtree(tmp_path, ignore_errors=True)
    code, out = persample("--storage", tmp_path, "compare", "0042", "0043")
    assert code == cli.BAD_INPUT and "no saved run '0042'" in out


def test_history_lists_runs_oldest_first(stored_runs):
    storage = stored_runs["base"].parent.parent
    assert [p.name[:4] for p in history.stored(storage)] == [f"{n:04d}" for n in range(1, UNCHANGED_RUNS + 2)]


def test_slowed_does_proportionally_more_work():
    import time

    from persample_bench.timing import slowed

    def work():
        time.sleep(0.02)
        return "result"

    start = time.perf_counter()
    assert slowed(work, 0.5)() == "result"
    assert 0.029 < time.perf_counter() - start < 0.06


def test_sensitivity_counts_flagged_pairs_across_trials():
    from persample_gate.sensitivity import flagged, format_study

    point = Point("mlp", "vmap", 64, "cpu")

    runs = {
        0.0: [_run(f"r{s}", 0.0, point, s, 0.03) for s in range(4)],
        0.2: [_run(f"s{s}", np.log(1.2), point, s + 10, 0.03) for s in range(4)],
    }
    # unchanged: each pair of trials once; slowed: every other trial's run (4 x 3), never a trial against itself
    result = flagged(runs, [0.1])[0.1]
    assert result[0.0] == {point.id: (0, 6), "all points": (0, 6), "runs (any row)": (0, 6)}
    assert result[0.2] == {point.id: (12, 12), "all points": (12, 12), "runs (any row)": (12, 12)}
    table = format_study(result, 0.1)
    assert "none (false alarm)" in table and "20% slower" in table and "100.0% (12/12)" in table


def test_scaled_slows_the_method_and_leaves_the_loop_alone():
    from persample_gate.sensitivity import scaled

    loop, floor = Point("mlp", "loop", 64, "cpu"), Point("mlp", "floor", 64, "cpu")
    run = history.Run(Path("r"), {}, "", {POINT: [1.0, 2.0], loop: [4.0, 4.0], floor: [0.5]}, {POINT: [4.0, 4.0]})
    slow = scaled(run, "vmap", 0.1)
    assert np.allclose(gate.ratio_samples(slow, POINT), [1.1 / 4, 2.2 / 4])
    assert slow.samples[loop] == [4.0, 4.0] and slow.baseline_rounds == run.baseline_rounds
    assert slow.samples[floor] == [0.5]  # other methods' rows stay: they share the gate's alpha
    assert run.samples[POINT] == [1.0, 2.0]  # the stored run itself is left as it was


def _cells(out, section, row):
    """(flagged, pairs) per column of ``row`` in the tables after ``section``."""
    table = out.split(section)[1]
    line = next(line for line in table.splitlines() if line.startswith(row))
    return [(int(done), int(total)) for done, total in re.findall(r"\((\d+)/(\d+)\)", line)]


def test_sensitivity_of_stored_runs_gates_them_against_each_other(stored_runs):
    """The unchanged runs the gate tests stored, vmap's rounds scaled by each slowdown: every pair once
    for false alarms, every run against every other one's slowed copy for detection."""
    runs = len(stored_runs["unchanged"])
    code, out = persample("sensitivity", "--stored", *stored_runs["unchanged"], "--thresholds", "0.1")
    assert code == cli.OK, out
    assert f"{runs} stored runs" in out and "vmap's points slowed by scaling its rounds" in out, out
    cells = _cells(out, "the gate on the rounds alone", "mlp-vmap-B64-cpu")
    assert [total for _, total in cells] == [runs * (runs - 1) // 2] + [runs * (runs - 1)] * 4
    assert cells[-1][0] >= cells[-1][1] / 2, out  # 20% slower: about two rounds' spreads, caught in most pairs
    assert [total for _, total in _cells(out, "the gate on the rounds alone", "runs (any row)")] == [
        c[1] for c in cells
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "opacus"], "has no point of opacus; name a method it has with --method"),
        (["--save", "study.json"], "--save keeps measured trials; --stored measures nothing"),
    ],
)
def test_sensitivity_of_stored_runs_refuses_what_it_cannot_study(stored_runs, args, message):
    code, out = persample("sensitivity", "--stored", *stored_runs["unchanged"], *args)
    assert code == cli.BAD_INPUT and message in out, out


def test_sensitivity_of_stored_runs_needs_the_loop_for_a_speedup(stored_runs, tmp_path):
    """Runs of vmap alone, timed on its own: no loop to take a speedup over, and the study says so."""
    paths = []
    for number, path in enumerate(stored_runs["unchanged"][:3]):
        data = json.loads(path.read_text())
        data["benchmarks"] = [bench for bench in data["benchmarks"] if bench["extra_info"]["method"] == "vmap"]
        for bench in data["benchmarks"]:
            del bench["extra_info"]["baseline_rounds"]
        paths.append(tmp_path / f"{number:04d}_vmap.json")
        paths[-1].write_text(json.dumps(data))
    code, out = persample("sensitivity", "--stored", *paths)
    assert code == cli.BAD_INPUT and "has no speedup of vmap: the loop's points are missing" in out, out


def test_sensitivity_of_stored_runs_needs_three(stored_runs, tmp_path):
    code, out = persample("--storage", tmp_path, "sensitivity", "--stored", *stored_runs["unchanged"][:2])
    assert code == cli.BAD_INPUT and "--stored needs at least 3 runs, given: 2" in out, out
    code, out = persample("--storage", tmp_path, "sensitivity", "--stored")
    assert code == cli.BAD_INPUT and f"stored on this hardware under {tmp_path}: 0" in out, out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trials", "2"], "--trials must be at least 3"),
        (["--timer", "cpu", "--threads", "2"], "needs one torch thread, not 2"),
    ],
)
def test_sensitivity_refuses_what_it_cannot_measure(args, message):
    code, out = persample("sensitivity", *args)
    assert code == 2 and message in out
