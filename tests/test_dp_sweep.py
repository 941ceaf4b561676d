"""The dp sweep: the DP step by each DP method, timed against the non-private step, in the grid, the checks before
timing, the summary, the stored run, the gate and ``persample ab``."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from persample_bench import prepare, timing, worker
from persample_bench.bench import interleaved
from persample_bench.grid import SWEEPS, axes, check_methods, in_sweep, points
from persample_bench.runformat import HistoryError, Point, baseline_of, load
from persample_bench.summary import summary_rows
from persample_core import MethodUnavailable
from persample_core.reference import reference_grads
from persample_gate import ab, gate, history
from tests.conftest import REPO
from tests.test_plugin import collect_in_process, suite

pytest_plugins = ["pytester"]


def test_the_dp_sweep_times_each_dp_method_over_the_nonprivate_step_without_a_floor():
    sweep = SWEEPS["dp"]
    assert (sweep.baseline, sweep.floor) == ("nonprivate", None)
    chosen = points("dp", devices=("cpu",), floor=sweep.floor)
    methods = {p.method for p in chosen}
    assert {"nonprivate", "dp_loop", "dp_vmap", "dp_ghost", "dp_opacus", "dp_backpack"} <= methods
    assert "floor" not in methods and "dp_vmap_compiled" not in methods  # compiling takes minutes here
    assert {p.workload for p in chosen} == {"simple_cnn", "mlp", "tiny_transformer", "resnet18_gn", "char_lstm"}
    assert all(interleaved(m) and baseline_of(m) == "nonprivate" for m in methods - {"nonprivate"})
    assert in_sweep(Point("mlp", "dp_ghost", 64, "cpu"), "dp") and not in_sweep(Point("mlp", "vmap", 64, "cpu"), "dp")
    assert axes("dp")["method"][0] == "nonprivate" and "dp_vmap_compiled" in axes("dp")["method"]  # asv's params


def test_dp_methods_are_named_as_methods_in_the_dp_sweep_and_refused_elsewhere():
    assert check_methods(["ghost", "dp_vmap"], "dp") == ["nonprivate", "dp_vmap", "dp_ghost"]
    with pytest.raises(ValueError, match="unknown method 'dp_vamp'; choose one of: dp_backpack, "):
        check_methods(["vamp"], "dp")
    for name in ("ghost", "dp_vmap", "nonprivate"):
        with pytest.raises(ValueError, match=f"^{name} is a method of the DP step; time it in the dp sweep"):
            check_methods([name], "mission")


def test_a_dp_point_is_checked_against_float64_and_the_nonprivate_step_too(monkeypatch):
    try:
        assert prepare.check_method("mlp", "dp_ghost", "cpu")[0].ok
    except MethodUnavailable as err:
        pytest.fail(f"ghost declined mlp: {err}")
    assert prepare.check_method("mlp", "nonprivate", "cpu") < 1e-5
    right = timing.nonprivate
    monkeypatch.setattr(
        prepare, "nonprivate", lambda *a: lambda x, y: {n: 1.01 * g for n, g in right(*a)(x, y).items()}
    )
    made = prepare._check_batch("mlp", "cpu", "float32")
    with pytest.raises(prepare.NonprivateMismatch, match="non-private step's gradient .* off the float64 loop's mean"):
        prepare.assert_nonprivate_matches_reference(*made, prepare._dp_expected("mlp", "cpu", "float32"))


def test_a_dp_point_of_a_loss_that_sums_is_refused_naming_the_reduction(monkeypatch, tmp_path):
    (tmp_path / "summed.py").write_text(
        "import torch.nn.functional as F\n"
        "from persample_core.workloads import mlp\n"
        "def make(batch_size, device, dtype, seed):\n"
        "    model, _, inputs, targets = mlp(batch_size, device, dtype, seed)\n"
        "    return model, lambda out, y: F.cross_entropy(out, y, reduction='sum'), inputs, targets\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"pass a loss that takes the mean over the batch \(reduction='mean'\)"):
        prepare.check_method("summed:make", "dp_vmap", "cpu")


def test_ghost_and_the_nonprivate_step_are_not_held_to_fitting_b_x_p_gradients():
    assert prepare.holds_gradients("dp_vmap") and prepare.holds_gradients("floor") and prepare.holds_gradients("loop")
    assert not prepare.holds_gradients("dp_ghost") and not prepare.holds_gradients("nonprivate")


def test_the_summary_of_a_dp_run_gives_time_and_memory_as_multiples_of_the_nonprivate_step():
    base, ghost = Point("mlp", "nonprivate", 8, "cpu"), Point("mlp", "dp_ghost", 8, "cpu")
    header, rows = summary_rows(
        {base: 0.010, ghost: 0.025},
        {base: (2_000_000, 100), ghost: (3_000_000, 100)},
        baseline="nonprivate",
        floor_name=None,
        interleaved={ghost: 1 / 2.4},  # the rounds' own ratio is taken over the medians'
    )
    assert header[6:] == ("x nonprivate", "peak mem", "mem x")
    assert rows[0][3:] == ("nonprivate", "10 ms", "1.25 ms", "1.00x", "2 MB", "1.00x")
    assert rows[1][3:] == ("dp_ghost", "25 ms", "3.12 ms", "2.40x", "3 MB", "1.50x")


def test_persample_ab_takes_dp_points_against_their_own_baseline():
    assert ab.parse_point("mlp-dp_ghost-B64-cpu") == Point("mlp", "dp_ghost", 64, "cpu")
    with pytest.raises(HistoryError, match="the nonprivate is what its points are timed against"):
        ab.parse_point("mlp-nonprivate-B64-cpu")
    answer = {
        "points": {"mlp-dp_ghost-B8-cpu": ["mlp", "dp_ghost", 8, "cpu", "float32"]},
        "levels": {"0.0": {"mlp-dp_ghost-B8-cpu": {"method": [2.0, 2.2], "baseline": [1.0, 1.0]}}},
    }
    logs = ab.side_logs([answer], "0.0")
    assert {key[0].method for key in logs} == {"dp_ghost", "nonprivate"}


def test_a_worker_prepares_a_dp_point_with_the_nonprivate_step_as_its_baseline():
    threads = torch.get_num_threads()
    try:
        prepared, machine, _ = worker._prepared({"points": [["mlp", "dp_vmap", 4, "cpu", "float32"]]})
    finally:
        torch.set_num_threads(threads)  # the worker times on one thread
    ((baseline, method, _),) = prepared.values()
    assert (baseline.point.method, method.point.method, machine["baseline"]) == ("nonprivate", "dp_vmap", "nonprivate")


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    """A timed run of the dp sweep at one small point, two DP methods, stored with --benchmark-json."""
    out = tmp_path_factory.mktemp("json") / "dp.json"
    code, output = suite(
        "--benchmark-only", "--persample-sweep", "dp", "--persample-workload", "mlp", "--persample-batch-sizes", "4",
        "--persample-methods", "vmap,ghost", "--persample-max-time", "0.3", f"--benchmark-json={out}",
    )  # fmt: skip
    assert code == 0, output[-3000:]
    return out, output


def test_a_dp_run_stores_each_step_over_the_nonprivate_one_and_the_gate_reads_it(dp_run):
    out, output = dp_run
    run = json.loads(out.read_text())
    assert (run["machine_info"]["persample"]["baseline"], run["machine_info"]["persample"]["floor"]) == (
        "nonprivate",
        None,
    )
    by_method = {b["extra_info"]["method"]: b["extra_info"] for b in run["benchmarks"]}
    assert set(by_method) == {"nonprivate", "dp_vmap", "dp_ghost"}
    ghost = by_method["dp_ghost"]
    assert len(ghost["baseline_rounds"]) == ghost["rounds"] >= 10  # interleaved with the non-private step
    assert (
        ghost["time_vs_nonprivate"] == pytest.approx(1 / ghost["speedup_over_loop"]) and ghost["time_vs_nonprivate"] > 1
    )
    assert ghost["memory_vs_nonprivate"] == pytest.approx(
        ghost["peak_memory_bytes"] / by_method["nonprivate"]["peak_memory_bytes"]
    )
    assert "x nonprivate" in output and "the nonprivate step's time" in output
    stored = load(out)
    ratios = [c for c in gate.rows(stored, stored) if c.metric == "ratio"]
    assert {c.point.method for c in ratios if isinstance(c.point, Point)} == {"dp_vmap", "dp_ghost"}
    row = next(line for line in gate.format_changes(ratios).splitlines() if line.startswith("mlp-dp_ghost"))
    assert f"x nonprivate  {ghost['time_vs_nonprivate']:.2f}x" in row  # its multiple, as the summary gives it


def test_the_nonprivate_step_is_one_batched_forward_and_backward_of_the_mean_loss():
    model, loss_fn, inputs, targets = prepare._check_batch("simple_cnn", "cpu", "float32")
    got = timing.nonprivate(model, loss_fn)(inputs, targets)
    want = reference_grads(model, loss_fn, inputs, targets)  # float64, per sample: their mean
    assert got.keys() == want.keys() == dict(model.named_parameters()).keys()
    assert all(torch.allclose(got[name].double(), ref.mean(0), rtol=1e-4, atol=1e-6) for name, ref in want.items())


def test_a_dp_run_is_gated_against_the_dp_run_before_it_never_a_mission_run(dp_run, tmp_path):
    mission = sorted((REPO / "tests" / "data" / "runs").rglob("*.json"))[0]
    dp_path, _ = dp_run
    paths = [shutil.copy(dp_path, tmp_path / "0001_dp.json"), shutil.copy(mission, tmp_path / "0002_mission.json")]
    candidate = load(dp_path)
    assert history.before_of(candidate.baseline, [Path(p) for p in paths]) == tmp_path / "0001_dp.json"
    assert history.before_of(candidate.baseline, [tmp_path / "0002_mission.json"]) is None
    other = load(mission)
    other.machine = {**candidate.machine, "baseline": "loop", "floor": "floor"}  # the same machine and settings
    with pytest.raises(history.SettingsMismatch, match="the DP step over the non-private step: they share no point"):
        history.check_comparable(other, candidate)


def test_the_dp_sweep_refuses_other_dtypes_in_one_line(pytester):
    code, output = collect_in_process(pytester, "--persample-sweep", "dp", "--persample-dtype", "bfloat16")
    assert code == pytest.ExitCode.USAGE_ERROR
    assert "--persample-dtype: the dp sweep times float32 only (the DP check has no low-precision rule" in output
