"""One point of the grid, timed through pytest-benchmark's fixture: the body of every benchmark.

``pytest --benchmark-only`` times every method (and the floor) at every point
of the sweep; the plain test run executes each once, untimed, so a broken
benchmark fails CI. The vmap point is timed in rounds interleaved with the
loop (the loop runs untimed by pytest-benchmark in each round's setup, timed by
us), so the ratio the gate tests is free of machine drift; so is every DP
step's point, with the non-private step. Every point is
timed until its median is known to the run's precision or its time cap
(``persample_bench.precision``); what it reached is recorded with it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from persample_bench.memory import WouldNotFit, out_of_memory, peak_bytes
from persample_bench.prepare import prepare_point
from persample_bench.runformat import DEFAULT_DTYPE, DP_PREFIX, baseline_of
from persample_bench.timing import plan, reached
from persample_core import MethodUnavailable, is_out_of_memory

INTERLEAVED = {"vmap"}  # timed in rounds with the baseline: the suite's question, and the gate's speedup rows


def interleaved(method: str) -> bool:
    """Whether ``method``'s points are timed in rounds with their baseline: vmap's (over the loop), and every DP
    step's (over the non-private step: what a DP method costs is the question of the dp sweep)."""
    return method in INTERLEAVED or method.startswith(DP_PREFIX)


def prepare_or_skip(point, **how):
    """``prepare_point(point, **how)``, or a skip saying why it cannot run here."""
    if torch.device(point.device).type == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    try:
        return prepare_point(point, **how)
    except MethodUnavailable as err:
        pytest.skip(f"{point.method} unavailable: {err}")
    except WouldNotFit as err:
        pytest.skip(str(err))


def seconds(fn, clock) -> float:
    start = clock()
    fn()
    return clock() - start


def time_point(benchmark, point, settings) -> dict:
    """Check, prepare and time ``point`` with pytest-benchmark's ``benchmark`` fixture (whose clock the plugin
    set for the point's device); its extra_info. ``settings``: the session's ``settings.Settings``.

    Running out of memory, at any stage (preparing, the pilot, the rounds, the peak memory), skips the point saying
    so, and the sweep goes on: the batch is too large for this machine, which is no failure of the method. The
    memory is freed once the error, and the frames it holds, are let go (``memory.out_of_memory``)."""
    try:
        return _time_point(benchmark, point, settings)
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        error = (str(err).splitlines() or [type(err).__name__])[0]
    benchmark.has_error = True  # rounds timed before the peak memory ran out are not stored (pytest-benchmark's flag)
    pytest.skip(out_of_memory(point, error))


def _time_point(benchmark, point, settings) -> dict:
    how = {"heap": settings.heap, "progress": settings.progress}
    prepared = prepare_or_skip(point, **how)
    benchmark.group = f"{point.workload} {point.device} B={point.batch_size}" + (
        "" if point.dtype == DEFAULT_DTYPE else f" {point.dtype}"
    )
    benchmark.extra_info.update(
        workload=point.workload,
        method=point.method,
        batch_size=point.batch_size,
        device=point.device,
        dtype=point.dtype,
        threads=torch.get_num_threads(),
        n_params=prepared.n_params,
        gradient_bytes=prepared.gradient_bytes,
        compile_seconds=prepared.compile_seconds,
        timer=settings.clock_name(point),
    )
    clock = settings.clock(point)
    fns = {"method": prepared.run}
    if interleaved(point.method):
        fns["baseline"] = prepare_or_skip(replace(point, method=baseline_of(point.method)), **how).run
    precision = settings.precision(gated="baseline" in fns)
    rounds, found = (1, {}) if benchmark.disabled else plan(fns, precision, clock)
    baseline_rounds = []
    setup = (lambda: baseline_rounds.append(seconds(fns["baseline"], clock))) if "baseline" in fns else None
    benchmark.pedantic(prepared.run, setup=setup, rounds=rounds, iterations=1)
    if benchmark.disabled:
        return benchmark.extra_info
    timed = {"method": list(benchmark.stats.stats.data)}
    if baseline_rounds:
        timed["baseline"] = benchmark.extra_info["baseline_rounds"] = baseline_rounds
    benchmark.extra_info.update(found, **reached(timed, precision))
    peak = peak_bytes(prepared.run, point.device)  # one more call, untimed
    benchmark.extra_info.update(
        peak_memory_bytes=peak, memory_vs_minimum=None if peak is None else peak / prepared.gradient_bytes
    )
    settings.record(point, benchmark)
    return benchmark.extra_info
