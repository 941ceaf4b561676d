"""Preparing a point: checked, built, synchronised, warmed up; or skipped, saying why."""

import time
from types import SimpleNamespace

import pytest
import torch

from persample_bench import bench
from persample_bench import prepare as suite
from persample_bench.bench import prepare_or_skip
from persample_bench.runformat import Point
from persample_bench.settings import Settings

suite_prepare = suite.prepare


def test_every_point_is_timed_through_the_synchronising_wrapper(monkeypatch):
    seen = []
    real = suite.synchronized
    monkeypatch.setattr(suite, "synchronized", lambda fn, device: seen.append(device) or real(fn, device))
    suite.prepare_point(Point("mlp", "vmap", 2, "cpu"), warmup=0)
    assert seen == ["cpu"]


def test_absent_cuda_point_is_skipped_with_a_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so a CUDA point runs")
    with pytest.raises(pytest.skip.Exception, match="CUDA is not available on this machine"):
        prepare_or_skip(Point("mlp", "vmap", 2, "cuda"))


class Benchmark:
    """As much of pytest-benchmark's fixture as ``time_point`` uses: ``pedantic`` times ``fn`` round by round."""

    disabled = False

    def __init__(self):
        self.extra_info, self.group, self.timing = {}, None, False

    def pedantic(self, fn, setup=None, rounds=1, iterations=1):
        self.timing, data = True, []
        for _ in range(rounds):
            if setup:
                setup()
            start = time.perf_counter()
            fn()
            data.append(time.perf_counter() - start)
        self.stats, self.timing = SimpleNamespace(stats=SimpleNamespace(data=data)), False


CUDA_OOM = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8 GiB")


@pytest.mark.parametrize(
    "error, stage",
    [
        *((CUDA_OOM, stage) for stage in ("check", "warm-up", "pilot", "rounds", "peak memory")),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 1 TB"), "rounds"),
        (MemoryError(), "pilot"),  # Python's own, with no message
    ],
)
def test_out_of_memory_at_any_stage_skips_the_point_saying_where_and_how_much_is_free(monkeypatch, error, stage):
    calls, benchmark = {"vmap": 0}, Benchmark()
    fails_at = {"warm-up": 1, "pilot": 2}.get(stage)  # the method's first call is its warm-up, the second the pilot's

    def prepared(model, loss_fn, method):
        compute = suite_prepare(model, loss_fn, method=method)
        if method != "vmap":
            return compute

        def run(*args):
            calls["vmap"] += 1
            if calls["vmap"] == fails_at or (stage == "rounds" and benchmark.timing):
                raise error
            return compute(*args)

        return run

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(suite, "prepare", prepared)
    if stage == "check":
        monkeypatch.setattr(suite, "check_method", fails)
    if stage == "peak memory":
        monkeypatch.setattr(bench, "peak_bytes", fails)
    settings = Settings(sweep="mission", methods=[], timer="wall", heap="system", max_time=0.3, progress=print)
    with pytest.raises(pytest.skip.Exception, match=r"out of memory at B=1 on cpu \(\d+\.\d GiB free of \d+\)"):
        bench.time_point(benchmark, Point("mlp", "vmap", 1, "cpu"), settings)
    assert calls["vmap"] == fails_at if fails_at else benchmark.timing == (stage == "rounds")
    assert benchmark.has_error  # so pytest-benchmark stores none of its rounds


def test_other_runtime_errors_are_not_hidden_as_skips(monkeypatch):
    def broken(point, **how):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(bench, "prepare_point", broken)
    settings = Settings(sweep="mission", methods=[], timer="wall", heap="system")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        bench.time_point(Benchmark(), Point("mlp", "vmap", 2, "cpu"), settings)
