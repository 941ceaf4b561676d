"""The pytest plugin end to end: real runs through pytest-benchmark, their options, what they store, the gate,
and other projects' sessions left alone."""

import json
import os
import statistics
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from persample_bench.runformat import load
from persample_gate.pytest_plugin import BEFORE, GATED, gate_session, pytest_sessionfinish
from tests.conftest import REPO

# One cheap point of each kind (the loop alone, vmap interleaved with it, the floor), timed briefly.
SMALL = ["-k", "mlp and B1- and cpu", "--persample-max-time", "0.3"]


pytest_plugins = ["pytester"]  # collect_in_process


def suite(*args, slowdown=0.0, timeout=300):
    """``pytest tests/test_benchmarks.py ARGS`` in a process of its own: (exit status, output)."""
    env = {**os.environ, "PERSAMPLE_TEST_SLOWDOWN": str(slowdown)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_benchmarks.py", "-p", "no:cacheprovider", "-p",
         "tests.slowdown_plugin", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    """One timed run of the small grid, on the system heap, written with --benchmark-json."""
    out = tmp_path_factory.mktemp("json") / "run.json"
    code, output = suite("--benchmark-only", *SMALL, "--persample-heap", "system", f"--benchmark-json={out}")
    assert code == 0, output[-3000:]
    return json.loads(out.read_text()), output


def test_a_timed_run_records_what_it_measured_and_how(timed):
    run, _ = timed
    info = run["machine_info"]["persample"]
    for key in ("cpu_model", "torch_threads", "torch_version", "gpu_name", "tf32_matmul", "hardware_id"):
        assert key in info
    assert info["timer"] == "wall" and info["heap_policy"] == "system" and info["sweep"] == "mission"
    assert (info["baseline"], info["floor"]) == ("loop", "floor")
    by_method = {b["extra_info"]["method"]: b for b in run["benchmarks"]}
    assert set(by_method) == {"loop", "vmap", "floor"}
    vmap = by_method["vmap"]["extra_info"]
    for key in ("workload", "batch_size", "device", "dtype", "time_per_sample", "speedup_over_loop", "floor_multiple",
                "peak_memory_bytes", "memory_vs_minimum", "precision", "pilot_rounds"):  # fmt: skip
        assert vmap[key] is not None, key
    assert vmap["rounds"] == len(vmap["baseline_rounds"]) == len(by_method["vmap"]["stats"]["data"]) >= 10
    assert (
        vmap["precision_target"] == 0.03 and vmap["max_time"] == 0.3 and vmap["resolved"] == (vmap["precision"] <= 0.03)
    )
    assert vmap["compile_seconds"] is None  # recorded for every point, set where a method compiles
    rounds = zip(by_method["vmap"]["stats"]["data"], vmap["baseline_rounds"])  # the speedup of the same rounds
    assert vmap["speedup_over_loop"] == pytest.approx(1 / statistics.median(m / b for m, b in rounds))
    assert by_method["loop"]["extra_info"]["precision_target"] == 0.05  # points timed alone: the sweep's other target


def test_the_summary_the_stored_run_and_the_report_show_one_speedup(timed, tmp_path):
    pytest.importorskip("matplotlib", reason="the report needs matplotlib (the test extra installs it)")
    from persample_gate import report
    from tests.test_report import vs_loop

    data, output = timed
    (path := tmp_path / "run.json").write_text(json.dumps(data))
    interleaved = [bench["extra_info"] for bench in data["benchmarks"] if "baseline_rounds" in bench["extra_info"]]
    stored = [f"{info['speedup_over_loop']:.2f}x" for info in interleaved]
    summary = output[output.index("persample summary") :].splitlines()
    printed = [next(cell for cell in line.split() if cell.endswith("x")) for line in summary if " vmap " in line]
    assert stored and vs_loop(report._summary(load(path))) == printed == stored, (printed, stored)


def test_a_timed_run_shows_progress_and_the_summary(timed):
    _, output = timed
    lines = [line for line in output.splitlines() if line.startswith("persample: [")]
    assert [line.split("]")[0] for line in lines] == ["persample: [1/3", "persample: [2/3", "persample: [3/3"], output
    assert "mlp-vmap-B1-cpu" in lines[1] and "x the loop" in lines[1] and "rounds" in lines[1], lines
    assert "to go)" in lines[0] and "to go" not in lines[-1]
    assert "persample summary: mission sweep" in output and "heap system" in output and "x floor" in output, output


def test_the_estimate_follows_the_plan_at_first_and_the_points_pace_later():
    from persample_bench.progress import remaining

    # A 30 s compile in the first point planned at 6 s: the estimate stays within a few times the plan's 600 s...
    assert 600 < remaining(elapsed=30, planned=6, left=600) < 4 * 600
    # ...while points that keep running twice as slow as planned make it twice the plan's.
    assert remaining(elapsed=600, planned=300, left=300) == pytest.approx(600, rel=0.05)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests a machine without CUDA")
def test_without_cuda_only_the_cpu_points_are_collected():
    code, output = suite("--co", "-q")
    assert code == 0 and "-cpu]" in output and "-cuda]" not in output, output
    if not torch.cuda.is_available():
        code, output = suite("--co", "-q", "--persample-device", "cuda:1")
        assert code == pytest.ExitCode.USAGE_ERROR and "cuda:1: CUDA is not available here" in output, output


def test_methods_chooses_what_is_timed_beside_the_loop_and_the_floor():
    code, output = suite("--co", "-q", "--persample-methods", "vmap_chunked", "-k", "mlp and B64-")
    ids = [line.split("[")[1].rstrip("]") for line in output.splitlines() if "test_point[" in line]
    assert code == 0 and ids == ["mlp-loop-B64-cpu", "mlp-vmap_chunked-B64-cpu", "mlp-floor-B64-cpu"], output


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--persample-methods", "vamp"],
            "--persample-methods: unknown method 'vamp'; choose one of: backpack, expanded_weights, loop",
        ),
        (["--persample-precision", "-1"], "argument --persample-precision: '-1' is not a positive number"),
        (["--persample-max-time", "soon"], "argument --persample-max-time: 'soon' is not a positive number"),
        (["--persample-sweep", "huge"], "argument --persample-sweep: invalid choice: 'huge'"),
        (["--persample-heap", "tcmalloc"], "argument --persample-heap: invalid choice: 'tcmalloc'"),
        (["--persample-timer", "cpu", "--persample-threads", "2"], "the cpu timer needs one torch thread, not 2"),
        (["--persample-device", "gpu"], "--persample-device: 'gpu' is not a device to time on; choose cpu, cuda"),
        (["--persample-gate", "--benchmark-disable"], "--persample-gate needs timed points: drop --benchmark-disable"),
        (
            ["--persample-gate", "--benchmark-storage=mongodb://db"],
            "--persample-gate reads stored runs from a folder, not mongodb://db",
        ),
    ],
)
def test_bad_options_are_refused_in_one_line(pytester, args, message):
    code, output = collect_in_process(pytester, *args)
    assert code in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERRUPTED) and message in output, output


def collect_in_process(pytester, *args):
    """``pytest --co -q ARGS`` on the suite in this process (a process each would spend two seconds starting torch
    and pytest): (exit status, output). The torch thread count an option sets is put back."""
    pytester.makepyfile(test_suite="from persample_bench.suite import test_point  # noqa: F401")
    threads = torch.get_num_threads()
    try:
        result = pytester.runpytest_inprocess("--co", "-q", "-p", "no:cacheprovider", *args)
    finally:
        torch.set_num_threads(threads)
    return result.ret, "\n".join(result.outlines + result.errlines)


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """Three runs stored with --persample-gate: the first, an unchanged second, and a third with vmap doing 4x the
    work."""
    storage = tmp_path_factory.mktemp("benchmarks")
    args = [
        "--benchmark-only",
        *SMALL,
        "--persample-threads",
        "1",
        "--persample-timer",
        "cpu",
        f"--benchmark-storage=file://{storage}",
    ]
    runs = [
        suite(*args, "--persample-gate"),
        suite(*args, "--persample-gate"),
        suite(*args, "--persample-gate", slowdown=3.0),
    ]
    return storage, runs


def test_runs_are_stored_where_pytest_benchmark_finds_them(gated):
    storage, _ = gated
    stored = sorted(storage.glob("*/*.json"))
    assert [path.name[:4] for path in stored] == ["0001", "0002", "0003"] and stored[0].parent.name.startswith("Linux")
    listed = subprocess.run([sys.executable, "-m", "pytest_benchmark", "--storage", f"file://{storage}", "list"],
                            capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert listed.returncode == 0 and all(str(path) in listed.stdout for path in stored), listed.stdout + listed.stderr


def test_the_gate_says_there_is_no_verdict_until_the_noise_between_runs_is_known(gated):
    _, (first, second, _) = gated
    assert first[0] == 0 and "no baseline yet on this hardware" in first[1], first[1][-2000:]
    assert second[0] == 0 and "no verdict yet" in second[1] and "persample ab" in second[1], second[1][-3000:]


def test_the_gate_fails_the_session_on_a_gross_slowdown_even_without_history(gated):
    storage, (*_, slowed) = gated
    code, output = slowed
    report = output.split("persample gate", 1)[1]
    assert code == pytest.ExitCode.TESTS_FAILED, output[-3000:]
    assert "persample summary" not in report and "benchmark:" not in report, "the verdict comes after the tables"
    assert any(line.startswith("mlp-vmap-B1-cpu") and "speedup" in line and "REGRESSION" in line
               for line in report.splitlines()), report  # fmt: skip
    assert f"candidate {sorted(storage.glob('*/*.json'))[-1]}" in report


def test_the_gate_needs_a_stored_run_and_passes_unchanged_code(recorded):
    """On recorded runs: asked to gate a session that stored nothing is an error, not a pass; a run of unchanged
    code gated against the runs before it is no regression."""
    unchanged = recorded["unchanged"]
    code, text = gate_session(recorded["storage"], frozenset([*unchanged, recorded["slowed"]]))
    assert code == pytest.ExitCode.USAGE_ERROR and "nothing to gate" in text, text
    newest = sorted(recorded["storage"].glob("*/*.json"))
    code, text = gate_session(recorded["storage"], frozenset(newest) - {unchanged[-1]})
    assert code is None and "REGRESSION" not in text and f"candidate {unchanged[-1]}" in text, text


def test_the_gate_refuses_a_run_computed_with_other_numerics(storage):
    # The newest run, as if its matmul had run at TF32's precision: no verdict on other arithmetic.
    *earlier, newest = sorted(storage.glob("*/*.json"))
    data = json.loads(newest.read_text())
    data["machine_info"]["persample"]["float32_matmul_precision"] = "high"
    newest.write_text(json.dumps(data))
    code, text = gate_session(storage, frozenset(earlier))
    assert code == pytest.ExitCode.USAGE_ERROR, text
    assert "computed with different numerics (float32_matmul_precision: 'highest' != 'high')" in text, text


@pytest.mark.parametrize(
    "before, after",
    [(pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERRUPTED)],
)
def test_a_regression_fails_a_passing_session_and_keeps_another_status(recorded, before, after):
    config = SimpleNamespace(
        stash={BEFORE: frozenset(recorded["unchanged"])},
        option=SimpleNamespace(benchmark_storage=f"file://{recorded['storage']}"),
    )
    session = SimpleNamespace(config=config, exitstatus=before)
    finishing = pytest_sessionfinish(session)
    next(finishing)
    with pytest.raises(StopIteration):
        next(finishing)
    assert session.exitstatus == after and "REGRESSION" in config.stash[GATED], config.stash[GATED]


def test_benchmark_compare_against_other_hardware_is_refused(gated, tmp_path):
    storage, _ = gated
    other = json.loads(sorted(storage.glob("*/*.json"))[0].read_text())
    other["machine_info"]["persample"].update(gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1)
    folder = tmp_path / sorted(storage.glob("*/*.json"))[0].parent.name
    folder.mkdir()
    (folder / "0001_other.json").write_text(json.dumps(other))
    code, output = suite("--co", "-q", *SMALL, f"--benchmark-storage=file://{tmp_path}", "--benchmark-compare=0001")
    assert code == pytest.ExitCode.USAGE_ERROR, output
    assert "--benchmark-compare: that run comes from other hardware (gpu_name: None != 'NVIDIA H100" in output, output


FOREIGN = """
def test_other(benchmark):
    benchmark(sum, range(1000))
"""

# Probed at the session's very end, after every hook of ours (the JSON, the machine info, the terminal summary).
FOREIGN_CONFTEST = """
import json, os, sys


def pytest_unconfigure(config):
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump({"torch": "torch" in sys.modules, "env": sorted(k for k in os.environ if k.startswith("PERSAMPLE")),
                   "save_data": config.getoption("benchmark_save_data")}, out)
"""


def foreign_project(folder):
    (folder / "test_foreign.py").write_text(FOREIGN)
    (folder / "conftest.py").write_text(FOREIGN_CONFTEST)


def test_a_foreign_benchmark_session_is_left_as_it_was(tmp_path):
    """Another project's pytest-benchmark suite, with this package installed: no torch, no environment variable,
    no pytest-benchmark setting changed, its JSON as pytest-benchmark writes it, and no bare option of ours."""
    foreign_project(tmp_path)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PERSAMPLE")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--benchmark-json=out.json",
         "test_foreign.py"],
        cwd=tmp_path, env={**env, "PROBE_OUT": str(tmp_path / "probe.json")}, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads((tmp_path / "probe.json").read_text()) == {"torch": False, "env": [], "save_data": False}
    assert "persample" not in json.loads((tmp_path / "out.json").read_text())["machine_info"]
    helped = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=tmp_path, capture_output=True, text=True)
    ours = [line.split()[0] for line in helped.stdout.splitlines() if line.strip().startswith("--persample")]
    assert ours and not any(f"  {name}" in helped.stdout for name in ("--sweep", "--timer", "--heap", "--gate"))


def test_an_autosaved_foreign_run_keeps_no_rounds(tmp_path):
    """pytest-benchmark's default for what it stores (no --benchmark-save-data) holds in other projects."""
    foreign_project(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--benchmark-autosave",
         f"--benchmark-storage=file://{tmp_path / 'store'}", "test_foreign.py"],
        cwd=tmp_path, env={**os.environ, "PROBE_OUT": str(tmp_path / "probe.json")}, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    (saved,) = (tmp_path / "store").glob("*/*.json")
    assert "data" not in json.loads(saved.read_text())["benchmarks"][0]["stats"]


@pytest.mark.parametrize("old", ["--sweep=quick", "--timer", "--gate"])
def test_an_option_without_its_prefix_names_the_new_one(pytester, old):
    code, output = collect_in_process(pytester, *([old, "cpu"] if old == "--timer" else [old]))
    name = old.split("=")[0]
    assert code == pytest.ExitCode.USAGE_ERROR and f"{name} is now --persample-{name[2:]}" in output, output


def test_benchmark_only_at_the_root_collects_the_benchmark_suite_alone():
    """The mission's command ends on the summary, not on a skip line for each of the other tests."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--benchmark-only", "--co", "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert done.returncode == 0 and collected, done.stdout + done.stderr
    assert all(line.startswith("tests/test_benchmarks.py::test_point[") for line in collected), collected[:5]
    assert "deselected" in done.stdout.splitlines()[-1], done.stdout[-500:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, where float16 is timed")
def test_float16_on_a_cpu_only_session_is_refused_naming_the_way_out(pytester):
    code, output = collect_in_process(pytester, "--persample-dtype", "float32,float16")
    assert code == pytest.ExitCode.USAGE_ERROR and "float16 is timed on CUDA only" in output, output
    code, output = collect_in_process(pytester, "--persample-dtype", "bfloat16", "-k", "mlp and B64-")
    assert code == 0 and "mlp-vmap-B64-cpu-bfloat16" in output, output
