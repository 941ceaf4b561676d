"""A user's own model, end to end, from a folder outside the repository: ``persample bench --workload`` stores a
run of it, ``persample check`` judges every method on it, ``persample ab --workload`` gives a verdict on it."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from persample_bench.runformat import Point
from persample_gate import ab
from tests.conftest import REPO
from tests.test_workloads import GOOD as MODULE  # make, and functions that break the contract


@pytest.fixture
def folder(tmp_path):
    """A user's folder, outside the repository, holding their module ``mymodels``."""
    (tmp_path / "mymodels.py").write_text(textwrap.dedent(MODULE))
    return tmp_path


def persample(*args, cwd, env=None, timeout=240):
    """The installed console script, as a user runs it: (exit status, stdout, stderr)."""
    script = os.path.join(os.path.dirname(sys.executable), "persample")
    done = subprocess.run([script, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    return done.returncode, done.stdout, done.stderr


def test_persample_bench_stores_a_run_of_the_users_model(folder):
    code, out, err = persample(
        "bench",
        "--workload",
        "mymodels:make",
        "--batch-sizes",
        "4,16",
        "--max-time",
        "0.3",
        "--threads",
        "1",
        cwd=folder,
    )
    assert code == 0, out + err
    (stored,) = (folder / ".benchmarks").rglob("0001_*.json")
    benchmarks = json.loads(stored.read_text())["benchmarks"]
    points = {Point.of(b["extra_info"]): b["extra_info"] for b in benchmarks}
    assert {(p.method, p.batch_size) for p in points} == {(m, b) for m in ("loop", "vmap", "floor") for b in (4, 16)}
    assert all(p.workload == "mymodels:make" for p in points)
    assert all(info["speedup_over_loop"] > 0 for p, info in points.items() if p.method == "vmap")
    assert "mymodels:make  cpu" in out and "vs loop" in out, out


def test_persample_bench_refuses_a_broken_workload_and_stores_nothing(folder):
    code, out, err = persample("bench", "--workload", "mymodels:short", cwd=folder)
    assert code == 2, out + err
    assert "workload 'mymodels:short': its inputs are shape (3, 6) for batch_size=2" in out + err
    assert not (folder / ".benchmarks").exists()


def test_persample_check_judges_every_method_and_recommends(folder):
    methods = "vmap,expanded_weights"
    code, out, err = persample(
        "check", "mymodels:make", "--batch-size", "8", "--seconds", "0.2", "--methods", methods, "--json", cwd=folder
    )  # fmt: skip
    assert code == 0, out + err
    result = json.loads(out)
    assert result["parameters"] == 6 * 8 + 8 + 8 * 3 + 3 and result["batch_size"] == 8
    assert set(result["methods"]) == {"loop", "vmap", "expanded_weights"}
    for method, found in result["methods"].items():
        assert found["outcome"] == "correct" and found["error"] < 1e-4 and found["median_seconds"] > 0, method
    timed = {method: found["median_seconds"] for method, found in result["methods"].items()}
    assert result["fastest"] == min(timed, key=timed.get)
    assert result["fastest_within"] in timed and result["memory_budget_bytes"] > 0


def test_persample_check_prints_a_table_and_a_budget_that_nothing_fits(folder):
    code, out, err = persample(
        "check", "mymodels:make", "--batch-size", "8", "--seconds", "0.2", "--methods", "vmap", "--memory", "1B",
        cwd=folder,
    )  # fmt: skip
    assert code == 0, out + err
    assert "mymodels:make: 83 trainable parameters, B=8 on cpu, float32" in out, out
    assert "correct, worst" in out and "fastest correct: " in out and "fastest within 1 B (--memory): " in out, out


def test_persample_check_refuses_a_spec_that_does_not_load(folder):
    code, out, err = persample("check", "mymodels:nothing", cwd=folder)
    assert code == 2 and err.strip().count("\n") == 0, out + err
    assert "mymodels has no 'nothing'; name a function defined there (make, three, short, " in err


def test_ab_points_of_a_workload_are_vmap_at_each_batch():
    assert ab.workload_points(["mymodels:make"], (8, 32)) == [
        Point("mymodels:make", "vmap", 8, "cpu"),
        Point("mymodels:make", "vmap", 32, "cpu"),
    ]
    with pytest.raises(ab.HistoryError, match="cannot hold '-'"):
        ab.workload_points(["my-models"], (8,))


@pytest.mark.slow
def test_persample_ab_gives_a_verdict_on_the_users_model(folder):
    """From the repository (ab takes its baseline from git), the user's module on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(folder)}
    code, out, err = persample(
        "ab", "HEAD", "--workload", "mymodels:make", "--batch-sizes", "8", "--pairs", "3", "--seconds", "0.4",
        cwd=REPO, env=env,
    )  # fmt: skip
    assert code in (0, 1), out + err
    assert "mymodels:make-vmap-B8-cpu" in out, out


@pytest.mark.slow
def test_persample_ab_on_the_users_model_from_their_folder(folder):
    """Outside any repository: the installed persample_core on both sides (here one Python: an A/A comparison)."""
    code, out, err = persample(
        "ab", "--baseline-python", sys.executable, "--workload", "mymodels:make", "--batch-sizes", "8",
        "--pairs", "3", "--seconds", "0.4", cwd=folder,
    )  # fmt: skip
    assert code in (0, 1), out + err
    assert "mymodels:make-vmap-B8-cpu" in out, out


def test_the_recommendation_is_the_fastest_correct_and_the_fastest_within_the_budget():
    from persample_bench.check import Checked, memory_size, recommend

    checked = [
        Checked("loop", "correct", "", median=2.0, peak_bytes=100),
        Checked("vmap", "correct", "", median=1.0, peak_bytes=300),
        Checked("opacus", "declined", "no LSTM"),
        Checked("vmap_chunked", "correct", "not timed: out of memory"),
    ]
    assert recommend(checked, 200) == {"fastest": "vmap", "fastest_within": "loop"}
    assert recommend(checked, 50) == {"fastest": "vmap", "fastest_within": None}
    assert recommend(checked, None) == {"fastest": "vmap", "fastest_within": "vmap"}
    assert memory_size("4GiB") == 4 * 2**30 and memory_size("500MB") == 500 * 10**6 and memory_size("12") == 12


def test_persample_ab_refuses_a_baseline_that_predates_workload_specs(folder):
    """aca7dae, the last commit before workloads could be named by spec: refused by name before any worker runs."""
    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", "aca7dae^{commit}"], capture_output=True).returncode:
        pytest.skip("this clone lacks commit aca7dae (a shallow clone?)")
    code, out, err = persample("ab", "aca7dae", "--workload", "mymodels:make", cwd=REPO)
    assert code == 7 and "predates workloads named by MODULE:FUNCTION or a registered name" in err, out + err
