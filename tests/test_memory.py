"""Peak memory of a call, and the heap policies."""

import os
import subprocess
import sys

import pytest
import torch

from persample_bench import memory


@pytest.mark.skipif(not memory.cpu_peak_supported(), reason="needs Linux's /proc/self/clear_refs to reset the peak")
def test_cpu_peak_memory_sees_the_call_and_not_what_came_before():
    kept = torch.ones(50_000_000)  # 200 MB in use before the call: not the call's
    peak = memory.peak_bytes(lambda: torch.ones(25_000_000).sum(), "cpu")  # 100 MB for the call
    assert 95e6 < peak < 140e6
    assert kept.sum() > 0


FAULTS_PER_CALL = """
import resource
from persample_bench.runformat import Point
from persample_bench.prepare import prepare_point
point = prepare_point(Point("mlp", "vmap", 64, "cpu"))  # keeps the heap, checks, warms up
for _ in range(5):  # faults per call, as timed rounds would be
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    point.run()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(memory.keep_freed_memory() != memory.KEPT, reason="needs glibc's mallopt")
def test_a_prepared_point_runs_on_the_kept_heap_without_fresh_pages():
    """glibc gives blocks over 32 MB back to the OS when freed; a kept heap reuses them.

    In a fresh process, as a benchmark runs, and on the median of five calls,
    as the benchmark's median sees them: the first one or two calls after the
    warm-up can still fault about 8,000 pages in before the heap settles, and
    in this long test process a repeated 100 MB call sometimes faulted all its
    pages in again (not understood yet).
    """
    child = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_CALL],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert child.returncode == 0, child.stderr[-3000:]
    faults = sorted(int(line) for line in child.stdout.split())
    assert len(faults) == 5 and faults[2] < 1000, faults  # 24,582 (100 MB) per call when freed blocks go back


@pytest.mark.skipif(not memory.cpu_peak_supported(), reason="needs Linux's /proc/self/clear_refs to reset the peak")
def test_cpu_peak_memory_still_sees_the_call_on_a_kept_heap():
    memory.keep_freed_memory()
    call = lambda: torch.ones(25_000_000).sum()  # noqa: E731 (100 MB)
    call()
    assert 95e6 < memory.peak_bytes(call, "cpu") < 140e6


def test_cuda_peak_memory_is_reset_per_point(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 5000)
    assert memory.peak_bytes(lambda: events.append("call"), "cuda") == 4000
    assert events == ["reset", "call"]


def test_a_point_whose_gradients_would_not_fit_is_skipped_before_any_method_runs(monkeypatch):
    """mlp has 399,882 parameters: B=64 needs 102 MB of float32 gradients, more than the 64 MB said free."""
    import pytest

    from persample_bench import bench, prepare
    from persample_bench.memory import WouldNotFit
    from persample_bench.runformat import Point

    monkeypatch.setattr(memory, "free_and_total", lambda device: (2**26, 2**30))
    monkeypatch.setattr(prepare, "check_method", lambda *point: pytest.fail("a method ran"))
    point = Point("mlp", "vmap", 64, "cpu")
    with pytest.raises(WouldNotFit, match=r"mlp-vmap-B64-cpu: its B x P per-sample gradients need 0.1 GiB and cpu has"):
        prepare.prepare_point(point)
    with pytest.raises(pytest.skip.Exception, match="0.1 GiB free of 1; skipped, not attempted"):
        bench.prepare_or_skip(point)
    assert prepare.gradient_bytes(Point("mlp", "vmap", 64, "cpu", "bfloat16"), 10) == 64 * 10 * 2


def test_on_cuda_what_the_caching_allocator_holds_unused_counts_as_free(monkeypatch):
    """After a large point the allocator keeps its memory reserved: mem_get_info does not count it, the next point
    may reuse it."""
    from persample_bench import timing

    monkeypatch.setattr(timing, "asynchronous", lambda device: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 50 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2 * 2**30)
    assert memory.reusable("cuda:0") == (49 * 2**30, 80 * 2**30)
