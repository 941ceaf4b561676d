"""Per-sample gradients at every point of the grid: time, memory, and the ratio that gates regressions.

asv counts any increase of a value as a regression, so everything here is
lower-is-better: times, bytes, and the ratio method/baseline (never a speedup).
"""

from . import common
from .common import PointBenchmark, baseline_of, require


class Time(PointBenchmark):
    """Seconds per call. ``setup`` has warmed the point up; calls take milliseconds to seconds.

    Two processes a point (asv's rounds): asv runs every commit's first round,
    then every commit's second, so a drift of the machine between processes
    falls on every commit of a run rather than on the one timed during it.
    """

    number = 1
    rounds = 2
    repeat = (2, 25, 1.5)  # a round: at least 2 samples, at most 25, stop after 1.5 s
    warmup_time = 0

    def setup(self, workload, method, batch_size, device):
        super().setup(workload, method, batch_size, device)
        self.timer = self.clock(device)  # asv reads the clock after setup

    def time_per_sample_grads(self, *point):
        self.prepared.run()


class PeakMemory(PointBenchmark):
    """The process's peak resident memory (setup included), on the CPU."""

    params = PointBenchmark.narrowed(device=["cpu"])

    def peakmem_per_sample_grads(self, *point):
        self.prepared.run()


class CudaPeakMemory(PointBenchmark):
    """Peak bytes allocated on the GPU by one call, beyond what was allocated before it
    (the model and the batch): as the pytest-benchmark suite's peak_memory_bytes."""

    params = PointBenchmark.narrowed(device=["cuda"])
    unit = "bytes"

    def track_cuda_peak_memory(self, workload, method, batch_size, device):
        return common.peak_bytes(self.prepared.run, device)


class RatioToBaseline(PointBenchmark):
    """A method's time over the baseline's (the loop; in the dp sweep, PERSAMPLE_SWEEP=dp, the non-private step),
    both timed in alternating rounds in one process.

    Drift of the machine hits both alike within a round, so this ratio is far
    steadier than either time; it is what ``asv continuous`` gates on.

    Each round's ratio goes to asv as a sample, in the form asv's own timing
    benchmarks hand over theirs (``{"samples", "number"}``, which asv 0.6
    reads from any benchmark): asv then stores their median with its
    confidence interval, ``asv compare``/``continuous`` count a change only
    where Mann-Whitney on the samples finds it (not by ``--factor`` alone), and
    the dashboard draws the interval. asv runs a ``track_`` benchmark in one
    process, without rounds: the interleaving is what stands against drift.
    """

    # Without the baselines, which have no ratio to themselves: the dashboard opens a
    # graph on the first values of each axis, and an empty one would greet the reader.
    params = PointBenchmark.narrowed(method=[m for m in common.AXES["method"] if baseline_of(m) != m])
    unit = "ratio"
    precision, seconds = 0.02, 2.0  # interleaved rounds until the median ratio is known within 2%, or for 2 s

    def setup(self, workload, method, batch_size, device):
        require()  # common.measure exists only where this passes
        super().setup(workload, method, batch_size, device)
        self.baseline = self.prepare(workload, baseline_of(method), batch_size, device)

    def track_time_over_baseline(self, workload, method, batch_size, device):
        calls = {"method": self.prepared.run, "baseline": self.baseline.run}
        rounds, _ = common.measure(calls, common.Precision(self.precision, max_time=self.seconds), self.clock(device))
        return {"samples": common.statistic(rounds), "number": 1}
