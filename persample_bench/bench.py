"""One point of the grid, timed through pytest-benchmark's fixture: the body of every benchmark.

``pytest --benchmark-only`` times every method (and the floor) at every point
of the sweep; the plain test run executes each once, untimed, so a broken
benchmark fails CI. The vmap point is timed in rounds interleaved with the
loop (the loop runs untimed by pytest-benchmark in each round's setup, timed by
us), so the ratio the gate tests is free of machine drift.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from persample_bench.grid import GATED_ROUNDS
from persample_bench.memory import peak_bytes
from persample_bench.plugin import record
from persample_bench.prepare import prepare_point
from persample_bench.timing import CLOCKS, clock_for, is_out_of_memory, rounds_to_fill
from persample_core import BASELINE, MethodUnavailable

INTERLEAVED = {"vmap"}


def prepare_or_skip(point):
    if point.device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    try:
        return prepare_point(point)
    except MethodUnavailable as err:
        pytest.skip(f"{point.method} unavailable: {err}")
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        if point.device == "cuda":
            torch.cuda.empty_cache()
        pytest.skip(f"out of memory at B={point.batch_size} on {point.device}: {str(err).splitlines()[0]}")


def seconds(fn, clock) -> float:
    start = clock()
    fn()
    return clock() - start


def interleaved_with_baseline(benchmark, prepared, point, config, clock):
    """Time ``prepared`` with a timed baseline call before each round, recorded in extra_info.

    Rounds follow the sweep's GATED_ROUNDS (the gate's power comes from them),
    or the run's --benchmark-min-rounds and --benchmark-max-time where larger.
    """
    baseline = prepare_or_skip(replace(point, method=BASELINE))
    baseline_rounds = []
    min_rounds, max_time = GATED_ROUNDS[config.getoption("sweep")]
    rounds = rounds_to_fill(
        {"method": prepared.run, "baseline": baseline.run},
        max(min_rounds, config.getoption("benchmark_min_rounds")),
        max(max_time, float(config.getoption("benchmark_max_time"))),
    )
    benchmark.pedantic(
        prepared.run, setup=lambda: baseline_rounds.append(seconds(baseline.run, clock)), rounds=rounds, iterations=1
    )
    benchmark.extra_info["baseline_rounds"] = baseline_rounds


def time_point(benchmark, point, config) -> dict:
    """Check, prepare and time ``point`` with pytest-benchmark's ``benchmark`` fixture; its extra_info."""
    prepared = prepare_or_skip(point)
    clock = clock_for(config.getoption("timer"), point.device)
    # pytest-benchmark has one timer per session (--benchmark-timer); a CUDA
    # point of a --timer cpu run needs the wall clock, so it is set per point.
    benchmark._timer = CLOCKS[clock]
    benchmark.group = f"{point.workload} {point.device} B={point.batch_size}"
    benchmark.extra_info.update(
        workload=point.workload,
        method=point.method,
        batch_size=point.batch_size,
        device=point.device,
        dtype="float32",
        threads=torch.get_num_threads(),
        n_params=prepared.n_params,
        gradient_bytes=prepared.gradient_bytes,
        compile_seconds=prepared.compile_seconds,
        timer=clock,
    )
    if point.method in INTERLEAVED:
        interleaved_with_baseline(benchmark, prepared, point, config, CLOCKS[clock])
    else:
        benchmark(prepared.run)
    if not benchmark.disabled:  # one more call, untimed, for its peak memory
        peak = peak_bytes(prepared.run, point.device)
        benchmark.extra_info.update(
            peak_memory_bytes=peak, memory_vs_minimum=None if peak is None else peak / prepared.gradient_bytes
        )
    record(config, point, benchmark)
    return benchmark.extra_info
