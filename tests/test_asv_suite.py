"""The asv suite in benchmarks/: what asv discovers, and why a point skips instead of failing."""

import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("asv_runner", reason="asv is not installed; pip install -e '.[asv]'")
from asv_runner.benchmarks.mark import SkipNotImplemented  # noqa: E402
from asv_runner.discovery import disc_benchmarks  # noqa: E402

from persample_bench.grid import axes, in_sweep  # noqa: E402
from persample_bench.runformat import BASELINE, Point  # noqa: E402
from persample_bench.timing import slowed  # noqa: E402
from persample_core import methods  # noqa: E402
from persample_core.methods import MethodUnavailable  # noqa: E402
from persample_core.reference import ReferenceMismatch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import common  # noqa: E402
from benchmarks.per_sample_grads import RatioToBaseline, Time  # noqa: E402
from tools.asv_machine import machine_entry  # noqa: E402

CPU_POINT = ("mlp", "vmap", 64, "cpu")  # in every sweep


def forget_suite():
    for name in [n for n in sys.modules if n == "benchmarks" or n.startswith("benchmarks.")]:
        del sys.modules[name]


def test_discovery_finds_every_benchmark_without_touching_cuda(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("CUDA touched at import or discovery: forked benchmark processes could not use it")

    for name in ("_lazy_init", "init", "is_available", "device_count"):
        monkeypatch.setattr(torch.cuda, name, refuse)
    forget_suite()
    found = {b.name for b in disc_benchmarks(str(REPO / "benchmarks"))}
    assert found == {
        "per_sample_grads.Time.time_per_sample_grads",
        "per_sample_grads.PeakMemory.peakmem_per_sample_grads",
        "per_sample_grads.CudaPeakMemory.track_cuda_peak_memory",
        "per_sample_grads.RatioToBaseline.track_time_over_baseline",
    }


def test_params_are_todays_grid_whatever_package_is_installed(monkeypatch):
    # asv picks a combination by index; an installed commit with other methods must not shift them.
    todays = json.loads(json.dumps(list(axes().values())))
    monkeypatch.setitem(methods.METHODS, "from_another_commit", methods.vmap_grad)
    forget_suite()
    suite = importlib.import_module("benchmarks.common")
    assert suite.PointBenchmark.params == todays
    assert suite.PointBenchmark.param_names == ["workload", "method", "batch_size", "device"]


def test_narrowed_params_keep_the_other_axes():
    params = common.PointBenchmark.narrowed(device=["cpu"])
    assert params[3] == ["cpu"]
    assert params[:3] == common.PointBenchmark.params[:3]


def skip_reason(setup, *point):
    with pytest.raises(SkipNotImplemented) as skipped:
        setup(*point)
    return str(skipped.value)


def test_a_point_outside_the_sweep_skips():
    assert "not in this commit's 'mission' sweep" in skip_reason(Time().setup, "mlp", "vmap", 8, "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")
def test_cuda_points_skip_without_cuda():
    assert "CUDA is not available" in skip_reason(Time().setup, "mlp", "vmap", 1, "cuda")


@pytest.mark.parametrize(
    "error, reason",
    [
        (MethodUnavailable("needs opacus"), "needs opacus"),
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), "runs out of memory"),
        (AttributeError("'Prepared' object has no attribute 'run'"), "lacks what mlp-vmap-B64-cpu needs"),
    ],
)
def test_what_a_commit_cannot_run_skips_with_the_reason(monkeypatch, error, reason):
    def prepare_point(point):
        raise error

    monkeypatch.setattr(common, "prepare_point", prepare_point)
    common.prepared.cache_clear()
    assert reason in skip_reason(Time().setup, *CPU_POINT)


def test_a_wrong_method_fails_rather_than_skips(monkeypatch):
    def prepare_point(point):
        raise ReferenceMismatch("vmap differs from the float64 reference")

    monkeypatch.setattr(common, "prepare_point", prepare_point)
    common.prepared.cache_clear()
    with pytest.raises(ReferenceMismatch):
        Time().setup(*CPU_POINT)


def test_a_commit_lacking_part_of_the_api_skips_every_point(monkeypatch):
    monkeypatch.setattr(common, "MISSING", ImportError("cannot import name 'in_sweep'"))
    assert "lacks what the suite needs: cannot import name 'in_sweep'" in skip_reason(Time().setup, *CPU_POINT)
    assert "in_sweep" in skip_reason(RatioToBaseline().setup, *CPU_POINT)


def test_the_ratio_graph_opens_on_a_point_the_ratio_measures():
    # asv's dashboard opens a graph on up to eight curves: every workload, the first methods, the
    # first batch size and device. The baseline, which has no ratio to itself, must not come first.
    workload, method, batch_size, device = (axis[0] for axis in RatioToBaseline.params)
    assert BASELINE not in RatioToBaseline.params[1]
    assert device == "cpu" and in_sweep(Point(workload, method, batch_size, device))


def ratio_samples(*point):
    common.prepared.cache_clear()
    bench = RatioToBaseline()
    bench.setup(*point)
    return bench.track_time_over_baseline(*point)


def ratio(*point):
    return statistics.median(ratio_samples(*point)["samples"])


def test_the_ratio_hands_asv_one_sample_a_round(one_thread):
    # asv reads {"samples", "number"} from a benchmark as it reads a timing benchmark's result,
    # and tests a change with Mann-Whitney on the samples.
    result = ratio_samples(*CPU_POINT)
    assert set(result) == {"samples", "number"} and result["number"] == 1
    assert len(result["samples"]) >= 10  # persample_bench.precision.Precision.min_rounds
    assert all(r > 0 for r in result["samples"])


@pytest.mark.parametrize("threads, device, clock", [(1, "cpu", time.process_time), (2, "cpu", time.perf_counter)])
def test_one_thread_on_the_cpu_is_timed_on_the_cpu_clock(monkeypatch, threads, device, clock):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert common.PointBenchmark.clock(device) is clock
    bench = Time()
    bench.setup(*CPU_POINT)
    assert bench.timer is clock  # the clock asv's timing loop reads after setup


def test_cuda_is_timed_on_the_wall_clock(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert common.PointBenchmark.clock("cuda") is time.perf_counter


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_ratio_rises_when_the_method_slows_down(monkeypatch, one_thread):
    """vmap doing 5x the work: the ratio must at least double.

    The margin is wide on purpose: asv times a few rounds, and on a shared
    machine they can read far below the work done. One torch thread: with two,
    the loop's many small parallel regions wait for a descheduled thread
    whenever another job takes a core, and its time, the divisor, swells
    (docs/studies/2026-11-28-noise-sources.md, "Threads").
    """
    before = ratio(*CPU_POINT)
    fast = methods.METHODS["vmap"]
    monkeypatch.setitem(methods.METHODS, "vmap", lambda model, loss_fn: slowed(fast(model, loss_fn), 4.0))
    assert ratio(*CPU_POINT) > 2 * before > 0


def test_the_machine_is_named_after_its_gpu():
    entry = machine_entry("NVIDIA H100 80GB HBM3")
    assert entry["machine"].endswith("-nvidia-h100-80gb-hbm3")
    assert entry["gpu"] == "NVIDIA H100 80GB HBM3"
    assert {"cpu", "os", "ram"} <= set(entry)


def test_a_machine_without_cuda_says_so():
    entry = machine_entry(None)
    assert entry["machine"].endswith("-cpu") and entry["gpu"] == "none"


OLD_COMMIT = """
from asv_runner._aux import update_sys_path
update_sys_path({benchmarks!r})  # as asv imports the suite: that one package from its folder, nothing beside it
import benchmarks.common as common
import persample_bench.prepare, persample_core
print(persample_core.__file__)
print(persample_bench.prepare.__file__)
print(common.prepare_point.__module__)
"""


def test_an_old_commit_is_timed_with_todays_harness(tmp_path):
    """As asv installs it: the commit's package (here a persample_core and a stale harness beside it) ahead of
    today's tree on the path. The suite times with today's persample_bench and measures the commit's core."""
    installed = tmp_path / "site-packages"
    shutil.copytree(REPO / "persample_core", installed / "persample_core")
    for stale in ("persample_bench", "persample_gate"):
        (installed / stale).mkdir(parents=True)
        (installed / stale / "__init__.py").write_text("raise ImportError('the commit\\'s own harness was imported')\n")
    done = subprocess.run(
        [sys.executable, "-c", OLD_COMMIT.format(benchmarks=str(REPO / "benchmarks"))],
        env={**os.environ, "PYTHONPATH": str(installed)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    core, harness, module = done.stdout.split()
    assert core == str(installed / "persample_core" / "__init__.py")
    assert harness == str(REPO / "persample_bench" / "prepare.py") and module == "persample_bench.prepare"
