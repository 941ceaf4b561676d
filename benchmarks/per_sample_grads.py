"""Per-sample gradients at every point of the grid: time, memory, and the ratio that gates regressions.

asv counts any increase of a value as a regression, so everything here is
lower-is-better: times, bytes, and the ratio method/baseline (never a speedup).
"""

import math
import statistics

import torch

from . import common
from .common import PointBenchmark, SkipNotImplemented, require


class Time(PointBenchmark):
    """Seconds per call. ``setup`` has warmed the point up; calls take milliseconds to seconds."""

    number = 1
    repeat = (2, 50, 3.0)  # at least 2 samples, at most 50, stop after 3 s
    rounds = 1
    warmup_time = 0

    def time_per_sample_grads(self, *point):
        self.prepared.run()


class PeakMemory(PointBenchmark):
    """The process's peak resident memory (setup included), on the CPU."""

    params = PointBenchmark.on("cpu")

    def peakmem_per_sample_grads(self, *point):
        self.prepared.run()


class CudaPeakMemory(PointBenchmark):
    """Peak bytes allocated on the GPU by one call, beyond what was allocated before it
    (the model and the batch): as the pytest-benchmark suite's peak_memory_bytes."""

    params = PointBenchmark.on("cuda")
    unit = "bytes"

    def track_cuda_peak_memory(self, *point):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        self.prepared.run()
        return torch.cuda.max_memory_allocated() - before


class RatioToBaseline(PointBenchmark):
    """A method's time over the baseline's (loop), both timed in alternating rounds in one process.

    Drift of the machine hits both alike within a round, so this ratio is far
    steadier than either time; it is what ``asv continuous`` gates on.
    """

    unit = "ratio"
    seconds = 2.0  # rounds enough to spend about this long; at least min_rounds
    min_rounds = 3

    def setup(self, workload, method, batch_size, device):
        require()  # common.BASELINE and common.interleaved exist only where this passes
        if method == common.BASELINE:
            raise SkipNotImplemented(f"{method} is the baseline the other methods are divided by")
        super().setup(workload, method, batch_size, device)
        self.baseline = self.prepare(workload, common.BASELINE, batch_size, device)

    def track_time_over_baseline(self, *point):
        calls = {"method": self.prepared.run, "baseline": self.baseline.run}
        one_round = sum(
            seconds for samples in common.interleaved(calls, rounds=1, warmup=0).values() for seconds in samples
        )
        rounds = max(self.min_rounds, math.ceil(self.seconds / one_round))
        samples = common.interleaved(calls, rounds=rounds, warmup=0)
        return statistics.median(samples["method"]) / statistics.median(samples["baseline"])
