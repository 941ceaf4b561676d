"""How a pytest session times its points: the options, read once, and what the run records of them.

The plugin (``persample_bench.plugin``) makes one ``Settings`` per session
from the command line; every point is timed by it (``persample_bench.bench``)
and the run's machine info is taken from it. Nothing happens on reading it:
the heap policy is applied by ``start``, which the first point's fixture calls.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Settings:
    """How this session times its points, from the command line; shared by every point."""

    sweep: str
    methods: list
    timer: str
    heap: str
    workloads: list = field(default_factory=list)  # --persample-workload's specs, where given: else the sweep's
    batch_sizes: tuple = ()  # --persample-batch-sizes, likewise
    dtypes: list = field(default_factory=list)  # --persample-dtype's, where given: else float32
    precision_target: float | None = None  # --persample-precision, where given: else the sweep's
    max_time: float | None = None  # --persample-max-time, likewise
    progress: Callable[[str], None] = print  # writes one line on the terminal, also while output is captured
    records: dict = field(default_factory=dict)  # Point -> its benchmark fixture, once timed
    points: dict = field(default_factory=dict)  # nodeid -> Point, as collected
    started: float = field(default_factory=time.perf_counter)
    heap_said: str | None = None  # what applying the heap policy did, once ``start`` has
    _hardware: dict = field(default_factory=dict)  # machine_info's, once a point is timed
    _tutorial: dict = field(default_factory=dict)

    def start(self) -> None:
        """Apply the heap policy, once, before the first point is built (``memory.apply_heap_policy``)."""
        if self.heap_said is None:
            from persample_bench.memory import apply_heap_policy

            self.heap_said = apply_heap_policy(self.heap)

    def machine_info(self) -> dict:
        """The run's ``machine_info["persample"]``: the hardware, software and numerics, and how the run times. Read
        afresh until a point is timed (pytest-benchmark asks at start-up too, under ``--benchmark-compare``, before
        the devices are known and the suite has fixed its numerics), then once."""
        from persample_bench.grid import SWEEPS
        from persample_bench.hardware import machine_info

        hardware = self._hardware or machine_info(devices={point.device for point in self.points.values()})
        if self.records:
            self._hardware.update(hardware)
        return {
            **hardware,
            "heap": self.heap_said,
            "heap_policy": self.heap,
            "timer": self.timer,
            "sweep": self.sweep,
            "baseline": SWEEPS[self.sweep].baseline,
            "floor": SWEEPS[self.sweep].floor,
        }

    def tutorial(self) -> dict | None:
        """Once the tutorial's point (``crosscheck.POINT``) is timed: what the tutorial's own code gives there, timed
        by ``Timer`` in a plain process (``crosscheck.plain_speedups``, about 10 s, once), for the summary to print
        beside the run's own figure; None before, or where the session does not time that point."""
        from persample_bench import crosscheck

        if not self._tutorial and crosscheck.POINT in self.records:
            self.progress("timing the tutorial's own code in a plain process, for the summary (about 10 s)")
            try:
                turns = crosscheck.plain_speedups()
            except (OSError, RuntimeError, ValueError) as err:  # its one line, not the session's end
                self._tutorial.update(error=f"the tutorial's code could not be timed in a plain process: {err}")
            else:
                self._tutorial.update(speedup=statistics.median(turns), turns=turns, how=crosscheck.PLAIN)
        return self._tutorial or None

    def clock_name(self, point) -> str:
        from persample_bench.timing import clock_for

        return clock_for(self.timer, point.device)

    def clock(self, point):
        from persample_bench.timing import clock

        return clock(self.timer, point.device)

    def precision(self, *, gated: bool):
        """The sweep's precision for a point (``gated``: interleaved with the baseline), as the options change it."""
        from dataclasses import replace

        from persample_bench.grid import SWEEPS

        chosen = SWEEPS[self.sweep].gated if gated else SWEEPS[self.sweep].plain
        given = {"target": self.precision_target, "max_time": self.max_time}
        return replace(chosen, **{name: value for name, value in given.items() if value is not None})

    def cost(self, point) -> float:
        """A point's seconds, roughly, for the progress line's estimate: its time cap, and the float64 check and the
        least rounds it gets past the cap, which grow with the batch."""
        from persample_bench.bench import interleaved

        return self.precision(gated=interleaved(point.method)).max_time + point.batch_size / 16

    def record(self, point, benchmark) -> None:
        """Remember a timed point; medians are read once the run is over."""
        self.records[point] = benchmark
