"""The default job's headline agrees with ``torch.utils.benchmark.Timer`` on the tutorial's own code in a plain
process, measured in turns (a minute: -m slow); and the plain side is plain."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest_plugins = ["pytester"]


def test_the_plain_side_imports_nothing_of_ours_and_leaves_the_allocator_alone():
    # Only persample_bench.memory changes the allocator; the tutorial's side must not even import it.
    probe = (
        "import sys, persample_bench.tutorial as t; t.tutorial_pair(2)['method'](); "
        "print(*sorted(m for m in sys.modules if m.startswith('persample')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["persample_bench", "persample_bench.tutorial"], done.stderr


@pytest.mark.slow
def test_the_default_jobs_speedup_is_the_one_the_tutorials_code_gives():
    done = subprocess.run(
        [sys.executable, "-m", "persample_bench.crosscheck"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0 and "they agree" in done.stdout, done.stdout + done.stderr[-2000:]


def test_the_plain_side_answers_each_turn_with_a_speedup():
    from persample_bench.crosscheck import plain_speedups

    turns = plain_speedups(turns=2, seconds=0.05, batch=4)
    assert len(turns) == 2 and all(0.1 < speedup < 100 for speedup in turns), turns


def test_the_default_job_prints_the_tutorials_own_figure_beside_its_own(pytester, monkeypatch, tmp_path):
    from persample_bench import crosscheck

    monkeypatch.setattr(crosscheck, "plain_speedups", lambda: [1.5, 1.6, 1.75])
    pytester.makepyfile(test_suite=(REPO / "tests" / "test_benchmarks.py").read_text())
    out = tmp_path / "run.json"
    result = pytester.runpytest_inprocess(
        "--benchmark-only", "-k", "simple_cnn-vmap-B64-cpu", "-p", "no:cacheprovider", f"--rootdir={pytester.path}",
        "--persample-max-time=0.5", f"--benchmark-json={out}",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    said = result.stdout.str()
    assert "the tutorial's point, simple_cnn B=64: 1.60x as its own code gives it (torch.utils.benchmark.Timer" in said
    assert "3 turns, 1.50-1.75x); " in said and "x in this run (heap kept: docs/measuring.md)" in said, said
    stored = json.loads(out.read_text())["persample"]["tutorial"]
    assert stored["speedup"] == 1.6 and stored["turns"] == [1.5, 1.6, 1.75]
