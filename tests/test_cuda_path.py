"""The CUDA path, run on the CPU: every timed call is synchronised and read on the device's clock.

This machine has no GPU, and a CUDA point timed without a synchronisation, or
on the process's CPU time, gives a fast wrong number rather than an error. So
the tests declare the CPU asynchronous through the seam in
``persample_bench.timing`` (``asynchronous``, ``device_synchronize``) and log,
in order, every call's work, every synchronisation, every clock read and every
read of the CUDA allocator's counters. At every read no work may be left
unsynchronised, and no clock but the wall clock may be read: each path that
times (the suite's pilot and rounds, the floor, its peak memory; the worker's
runs and slices; asv's three benchmarks) fails here if it loses either.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from persample_bench import prepare, timing, worker
from persample_bench.runformat import Point

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[1]
POINT = ("mlp", "vmap", 1, "cpu")  # in every sweep; timed in a fraction of a second


class Log(list):
    """Events in order: "work" (a method's call), "sync", "wall" / "cpu" (a clock read), "memory" (a counter read)."""

    def unsynchronised_reads(self) -> list[int]:
        """Indices of the reads (clock or memory) made while work was queued and not yet synchronised."""
        pending, bad = False, []
        for index, event in enumerate(self):
            if event == "work":
                pending = True
            elif event == "sync":
                pending = False
            elif pending:
                bad.append(index)
        return bad

    def check(self, *, least_reads: int) -> None:
        """Every read synchronised, only the wall clock read, and enough of both that the check means something."""
        assert "cpu" not in self, "a CUDA point read the process's CPU time, which does not see the GPU's work"
        assert not self.unsynchronised_reads(), f"reads with work still queued at {self.unsynchronised_reads()[:5]}"
        assert self.count("work") >= 2 and self.count("wall") >= least_reads, self


@pytest.fixture
def cuda_on_the_cpu(monkeypatch) -> Log:
    """The CPU made an asynchronous device, with everything that times on it logged."""
    log = Log()

    def clock(name, real):
        def read():
            log.append(name)
            return real()

        return read

    def logged(factory):
        def make(*args, **kwargs):
            compute = factory(*args, **kwargs)

            def work(*inputs):
                log.append("work")
                return compute(*inputs)

            work.__wrapped__ = compute  # so that what the method reports of itself (compile time) is still found
            return work

        return make

    def counter(value):
        def read(*args):
            log.append("memory")
            return value

        return read

    monkeypatch.setattr(timing, "asynchronous", lambda device: True)
    monkeypatch.setattr(timing, "device_synchronize", lambda device: log.append("sync"))
    for name, real in list(timing.CLOCKS.items()):
        monkeypatch.setitem(timing.CLOCKS, name, clock(name, real))
    monkeypatch.setattr(prepare, "prepare", logged(prepare.prepare))
    monkeypatch.setattr(prepare, "floor", logged(prepare.floor))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", counter(None))
    monkeypatch.setattr(torch.cuda, "memory_allocated", counter(0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", counter(1))
    monkeypatch.setattr(torch.cuda, "mem_get_info", counter((2**40, 2**40)))  # what the fit check asks first
    monkeypatch.setattr(torch.cuda, "memory_reserved", counter(0))
    threads = torch.get_num_threads()
    yield log
    torch.set_num_threads(threads)


def test_the_log_flags_a_read_of_unsynchronised_work():
    assert Log(["wall", "work", "sync", "wall"]).unsynchronised_reads() == []
    assert Log(["wall", "work", "wall", "sync"]).unsynchronised_reads() == [2]
    assert Log(["work", "memory", "sync"]).unsynchronised_reads() == [1]


def test_a_cuda_point_is_timed_on_the_wall_clock_whatever_the_timer(cuda_on_the_cpu):
    assert timing.clock_for("cpu", "cpu") == "wall"
    assert timing.clock("cpu", "cpu") is timing.CLOCKS["wall"]


def test_the_suite_synchronises_its_pilot_rounds_floor_and_memory(cuda_on_the_cpu, pytester):
    pytester.makepyfile(test_suite=(REPO / "tests" / "test_benchmarks.py").read_text())
    result = pytester.runpytest_inprocess(
        "--benchmark-only",
        "-k",
        "mlp and B1-cpu",  # the loop, vmap (interleaved with the loop) and the floor
        "-p",
        "no:cacheprovider",
        f"--rootdir={pytester.path}",
        "--persample-timer=cpu",  # the CPU points' clock: a CUDA point must not take it
        "--persample-threads=1",
        "--persample-max-time=0.3",
    )
    result.assert_outcomes(passed=3)
    log = cuda_on_the_cpu
    log.check(least_reads=3 * 2 * 10)  # three points, two reads a round, ten rounds at least
    assert log.count("memory") >= 3 * 2  # each point's peak: its counters read after a synchronisation


def test_the_worker_synchronises_its_runs_and_slices(cuda_on_the_cpu):
    request = {"points": [list(POINT)], "precision": 0.5, "max_time": 0.2, "timer": "cpu", "heap": "system"}
    answer = worker.run(request)
    (timed,) = answer["levels"]["0.0"].values()
    assert len(timed["method"]) == len(timed["baseline"]) >= 10
    cuda_on_the_cpu.check(least_reads=2 * 2 * 10)
    cuda_on_the_cpu.clear()
    answers = []
    point_id = Point(*POINT).id
    worker.serve(iter([json.dumps(request), json.dumps({"point": point_id, "seconds": 0.05})]), answers.append)
    assert len(answers[1]["method"]) >= 1
    cuda_on_the_cpu.check(least_reads=2 * 2)


def test_the_asv_suite_synchronises_its_times_ratios_and_memory(cuda_on_the_cpu):
    pytest.importorskip("asv_runner", reason="asv is not installed; pip install -e '.[asv]'")
    sys.path.insert(0, str(REPO))
    from benchmarks import common
    from benchmarks.per_sample_grads import CudaPeakMemory, RatioToBaseline, Time

    common.prepared.cache_clear()  # points prepared before the seam was in place would log nothing
    try:
        timed = Time()
        timed.setup(*POINT)
        for _ in range(3):  # as asv times a sample: its timer read around the call
            start = timed.timer()
            timed.time_per_sample_grads(*POINT)
            assert timed.timer() >= start
        ratio = RatioToBaseline()
        ratio.setup(*POINT)
        ratio.precision, ratio.seconds = 0.5, 0.2
        assert len(ratio.track_time_over_baseline(*POINT)["samples"]) >= 10
        memory = CudaPeakMemory()
        memory.setup(*POINT)
        assert memory.track_cuda_peak_memory(*POINT) == 1
    finally:
        common.prepared.cache_clear()
    cuda_on_the_cpu.check(least_reads=3 * 2 + 2 * 10)
    assert cuda_on_the_cpu.count("memory") >= 2


def test_without_the_wrapper_the_check_fails(cuda_on_the_cpu, monkeypatch):
    # The check's own power: a timed call that forgets to synchronise is caught.
    monkeypatch.setattr(prepare, "synchronized", lambda fn, device: fn)
    samples = timing.interleaved(
        {"method": prepare.prepare_point(Point(*POINT), heap="system").run}, rounds=3, clock=timing.clock("cpu", "cpu")
    )
    assert len(samples["method"]) == 3
    with pytest.raises(AssertionError, match="reads with work still queued"):
        cuda_on_the_cpu.check(least_reads=6)
