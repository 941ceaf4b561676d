"""Timing: CUDA synchronisation, the floor, the clocks, the slowdown wrapper."""

import pytest
import torch

from persample_bench import timing
from persample_core import make_workload


def test_synchronized_waits_for_cuda_after_the_call(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("sync", device)))
    timed = timing.synchronized(lambda: calls.append("call") or 42, "cuda")
    assert timed() == 42
    assert calls == ["call", ("sync", "cuda")]


def test_synchronized_leaves_cpu_calls_alone():
    fn = lambda: None  # noqa: E731
    assert timing.synchronized(fn, "cpu") is fn


def test_floor_writes_b_by_p_floats():
    model, loss_fn, inputs, targets = make_workload("mlp", batch_size=3)
    out = timing.floor(model, loss_fn)(inputs, targets)
    assert out.shape == (3, timing.trainable_numel(model))
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_the_cpu_clock_needs_one_thread_and_cuda_keeps_the_wall_clock():
    with pytest.raises(ValueError, match="needs one torch thread, not 2.*--threads 1"):
        timing.check_timer("cpu", 2)
    timing.check_timer("cpu", 1)
    timing.check_timer("wall", 2)
    assert timing.clock_for("cpu", "cuda") == "wall" and timing.clock_for("cpu", "cpu") == "cpu"


def test_the_cpu_timer_is_checked_only_where_it_times_a_point():
    timing.check_timer("cpu", 4, ["cuda", "cuda:1"])  # CUDA points keep the wall clock: nothing to refuse
    with pytest.raises(ValueError, match="needs one torch thread, not 4"):
        timing.check_timer("cpu", 4, ["cuda", "cpu"])


def test_timed_for_takes_interleaved_rounds_for_its_seconds_and_one_at_least():
    calls = []
    samples = timing.timed_for({"method": lambda: calls.append("m"), "baseline": lambda: calls.append("b")}, 0.0)
    assert calls == ["m", "b"] and len(samples["method"]) == len(samples["baseline"]) == 1
