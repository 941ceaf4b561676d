"""``persample ab``: the statistics on simulated workers, and the command end to end on one cheap point."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from persample_bench.runformat import HistoryError, Point
from persample_gate import ab, cli, gate
from persample_gate.history import HardwareMismatch, NumericsMismatch
from tests.conftest import REPO, persample

POINTS = [
    Point(*p) for p in (("simple_cnn", "vmap", 8, "cpu"), ("mlp", "vmap", 64, "cpu"), ("tiny", "vmap", 64, "cpu"))
]


def answer(rng, level, spread, slowdown, rounds):
    """One process's answer as the harness gives it: per point, rounds of the method and of the loop, the process's
    level ``level`` (log) moved by ``spread`` (sd, log) of its own, the method slower by ``slowdown``."""
    levels = {}
    for point in POINTS:
        loop = np.exp(rng.normal(np.log(0.05), 0.05, rounds) + level + rng.normal(0, spread))
        method = loop * 0.5 * (1 + slowdown) * np.exp(rng.normal(0, 0.05, rounds) + rng.normal(0, spread))
        levels[point.id] = {"method": list(method), "baseline": list(loop)}
    return {"points": {p.id: p.fields for p in POINTS},
            "levels": {"0.0": levels}, "machine": {"hardware_id": "cpu"}}  # fmt: skip


def pairs(rng, count, drift=0.05, spread=0.02, slowdown=0.0, rounds=30):
    """``{"A": [...], "B": [...]}`` of ``count`` pairs: the machine's speed drifts by ``drift`` (sd, log) from pair
    to pair, alike for both processes of a pair, and each process moves by ``spread`` of its own."""
    made = {"A": [], "B": []}
    for _ in range(count):
        level = rng.normal(0, drift)
        made["A"].append(answer(rng, level, spread, 0.0, rounds))
        made["B"].append(answer(rng, level, spread, slowdown, rounds))
    return made


def verdict(answers):
    """Judged as the command judges them: the speedup at its own threshold, the times at the gate's."""
    return gate.judge(ab.changes_of(answers), thresholds={"ratio": ab.THRESHOLD_RATIO})


def test_rows_are_each_point_and_metric_and_each_methods_mean():
    rows = ab.changes_of(pairs(np.random.default_rng(0), 3))
    ids = {(c.point.id, c.metric) for c in rows}
    assert ("vmap-cpu (geomean of 3)", "ratio") in ids and ("loop-cpu (geomean of 3)", "time") in ids
    assert ("mlp-loop-B64-cpu", "time") in ids and ("mlp-vmap-B64-cpu", "ratio") in ids and len(rows) == 12


def test_unchanged_code_is_flagged_at_most_one_time_in_a_hundred():
    """A/A on simulated pairs, eight of them: the machine drifts by 5% between pairs, each process moves by 2% of
    its own (far more than its rounds say): the whole table flags at most 1% of 1000 trials."""
    rng = np.random.default_rng(3)
    flagged = sum(any(c.regressed for c in verdict(pairs(rng, 8))) for _ in range(1000))
    assert flagged <= 10, flagged


@pytest.mark.parametrize("slowdown", [0.10, 0.05])
def test_a_slowdown_is_caught_when_processes_move_by_2_percent(slowdown):
    rng = np.random.default_rng(4)
    caught = sum(
        any(c.regressed and c.metric == "ratio" for c in verdict(pairs(rng, 8, slowdown=slowdown))) for _ in range(100)
    )
    assert caught >= 95, caught


def test_the_drift_a_pair_shares_is_no_noise_to_the_paired_test():
    """The same two sides, 8% apart, under 10% drift from pair to pair: paired, the difference is plain."""
    drift = np.array([0.0, 0.10, -0.10, 0.05, -0.05])
    change, low, high, p, spread = ab.paired(drift, drift + np.log(1.08) + [0.01, -0.01, 0.0, 0.005, -0.005])
    assert change == pytest.approx(0.08, abs=0.002) and low < 0.08 < high and p < 1e-4
    assert spread == pytest.approx(0.0079, rel=0.05)
    assert ab.paired([0.0, 0.0], [0.0, 0.0])[3] == 1.0  # identical pairs: nothing is significant


def test_the_two_sides_must_see_the_same_hardware():
    a, b = (
        {"machine": {"cpu_model": "AMD EPYC", "gpu_name": gpu, "gpu_count": int(bool(gpu))}} for gpu in (None, "H100")
    )
    with pytest.raises(HardwareMismatch, match=r"the two sides see different hardware \(gpu_name: None != 'H100'"):
        ab.check_comparable(a, b)


def test_the_two_sides_must_compute_with_the_same_numerics():
    # Another torch may default to other numerics: its times are of other arithmetic, refused before any timing.
    machine = {"cpu_model": "AMD EPYC", "gpu_name": None, "gpu_count": 0}
    a, b = {"machine": machine}, {"machine": {**machine, "tf32_matmul": True}}
    with pytest.raises(NumericsMismatch, match=r"the baseline \(A\) and the candidate \(B\) computed with different "
                       r"numerics \(tf32_matmul: False != True\)"):  # fmt: skip
        ab.check_comparable(a, b)
    ab.check_comparable(a, {"machine": {**machine, "torch_version": "2.12.0+cpu"}})  # versions alone: compared


@pytest.mark.parametrize("text", ["mlp-vmap-64-cpu", "mlp", "mlp-loop-B64-cpu"])
def test_a_point_id_that_is_not_one_is_refused_saying_the_form(text):
    with pytest.raises(HistoryError, match="write workload-method-B<batch>-device|what its points are timed against"):
        ab.parse_point(text)


# End to end, on one cheap point with the fewest pairs allowed: each process starts torch and checks the point
# (seconds).
CHEAP = ["--points", "mlp-vmap-B1-cpu", "--pairs", "3", "--seconds", "0.4"]


def no_temporary_folders(tmp: Path) -> bool:
    return not list(tmp.glob("persample-ab-*"))


@pytest.fixture
def scratch(tmp_path):
    """A TMPDIR of the test's own, to see that ab leaves no temporary folder behind."""
    return {**os.environ, "TMPDIR": str(tmp_path)}, tmp_path


def test_same_code_on_both_sides_passes_and_leaves_nothing_behind(scratch):
    env, tmp = scratch
    code, out = persample("ab", "HEAD", *CHEAP, env=env)
    assert code == cli.OK, out
    assert "baseline  A: persample_core of HEAD (" in out and "candidate B: persample_core of the working tree" in out
    assert "pair 3/3 (A / B): mlp-vmap-B1" in out and "0 regression(s) in 2 common point(s)" in out, out
    assert "the change at least 3% (speedup) / 10% (time)" in out, out  # ab's own threshold for the speedup
    assert no_temporary_folders(tmp)


def test_an_injected_slowdown_is_a_regression(scratch):
    env, tmp = scratch
    code, out = persample("ab", "HEAD", *CHEAP, env={**env, ab.TEST_SLOWDOWN: "2.0"})
    assert code == cli.REGRESSION, out
    assert any(line.startswith("mlp-vmap-B1-cpu") and "speedup" in line and "REGRESSION" in line
               for line in out.splitlines()), out  # fmt: skip
    assert no_temporary_folders(tmp)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["no-such-ref"], cli.NO_GIT, "no commit 'no-such-ref' in"),
        ([], cli.BAD_INPUT, "name a baseline: a git ref (persample ab main) or --baseline-python PATH"),
        (["HEAD", "--points", "mlp-vmap-64"], cli.BAD_INPUT, "is not a point id"),
        (["HEAD", "--baseline-python", "/no/python"], cli.BAD_INPUT, "--baseline-python /no/python: no Python there"),
        (["HEAD", "--pairs", "2"], 2, "argument --pairs: '2' is not a whole number of at least 3"),
        (["HEAD", "--points", "mlp-vamp-B1-cpu", "--pairs", "3"], cli.BAD_INPUT, "unknown method 'vamp'"),
    ],
    ids=["unknown-ref", "no-baseline", "bad-point", "no-python", "two-pairs", "unknown-method"],
)
def test_bad_input_gets_one_line_and_its_own_exit_code(scratch, args, code, message):
    env, tmp = scratch
    returned, out = persample("ab", *args, env=env)
    assert returned == code and message in out, out
    assert no_temporary_folders(tmp)


def test_outside_a_git_repository_a_ref_cannot_be_had(scratch):
    env, tmp = scratch
    code, out = persample("ab", "main", *CHEAP, cwd=tmp, env={**env, "GIT_CEILING_DIRECTORIES": str(tmp.parent)})
    assert code == cli.NO_GIT and "is not in a git repository" in out and "--baseline-python" in out, out


def test_a_side_is_given_the_packages_under_test_and_the_harness_alone():
    """Nothing else on a side's PYTHONPATH: installed (not editable), a package's folder is site-packages, whose
    torch would then shadow the one of the side's own Python (--baseline-python)."""
    with ab.sides(None, None, REPO) as (a, b):
        for side in (a, b):
            folders = [Path(folder) for folder in side.env()["PYTHONPATH"].split(os.pathsep)[:2]]
            assert [[entry.name for entry in folder.iterdir()] for folder in folders] == [
                ["persample_core"],
                ["persample_bench"],
            ]
            assert (folders[1] / "persample_bench" / "worker.py").is_file()


def test_a_baseline_python_without_torch_is_named(scratch):
    env, tmp = scratch
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "bare")], check=True)
    code, out = persample("ab", "--baseline-python", tmp / "bare" / "bin" / "python", *CHEAP, env=env)
    assert code == cli.UNUSABLE and "has no torch; install it there" in out and "side A" in out, out
    assert no_temporary_folders(tmp)


def test_a_ref_whose_library_lacks_what_the_harness_needs_is_named(scratch):
    """A repository whose persample_core at some commit is an empty package."""
    env, tmp = scratch
    repo = tmp / "repo"
    (repo / "persample_core").mkdir(parents=True)
    (repo / "persample_core" / "__init__.py").write_text('"""Too old for today\'s harness."""\n')
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "old"], check=True)
    code, out = persample("ab", "HEAD", *CHEAP, cwd=repo, env=env)
    assert code == cli.UNUSABLE and "lacks what today's harness needs" in out, out
    assert no_temporary_folders(tmp)


def test_ctrl_c_stops_the_workers_and_removes_the_temporary_folder(scratch):
    env, tmp = scratch
    # A shell's background job runs with SIGINT ignored, and a child inherits that: give the command the default.
    proc = subprocess.Popen(
        [sys.executable, "-m", "persample_gate.cli", "ab", "HEAD", *CHEAP], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while no_temporary_folders(tmp) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # a worker is running by now
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.INTERRUPTED and "interrupted; nothing was stored" in err, out + err
    assert no_temporary_folders(tmp)
    workers = subprocess.run(["pgrep", "-f", "persample_bench.worker"], capture_output=True, text=True).stdout.split()
    assert not [pid for pid in workers if Path(f"/proc/{pid}/environ").exists()
                and str(tmp).encode() in Path(f"/proc/{pid}/environ").read_bytes()]  # fmt: skip


def test_a_call_past_its_limit_stops_and_leaves_nothing_behind(scratch):
    """tests.conftest.persample's limit, which keeps a hung worker from hanging the suite."""
    env, tmp = scratch
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        persample("ab", "HEAD", *CHEAP, env=env, timeout=2)
    assert time.monotonic() - started < 10 and no_temporary_folders(tmp)
