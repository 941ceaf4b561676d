"""Preparing a point: checked, built, synchronised, warmed up; or skipped, saying why."""

import pytest
import torch

from persample_bench import prepare as suite
from persample_bench.bench import prepare_or_skip
from persample_bench.runformat import Point


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


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 1 TB"),
    ],
)
def test_out_of_memory_point_is_skipped_with_a_reason(monkeypatch, error):
    def oom(point):
        raise error

    monkeypatch.setattr("persample_bench.bench.prepare_point", oom)
    with pytest.raises(pytest.skip.Exception, match="out of memory at B=512 on cpu"):
        prepare_or_skip(Point("simple_cnn", "vmap", 512, "cpu"))


def test_other_runtime_errors_are_not_hidden_as_skips(monkeypatch):
    def broken(point):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr("persample_bench.bench.prepare_point", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        prepare_or_skip(Point("mlp", "vmap", 2, "cpu"))
