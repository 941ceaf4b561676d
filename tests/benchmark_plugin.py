"""pytest-benchmark integration: options, hardware in machine_info, per-hardware
storage, derived figures in extra_info, and the summary table at the end.

Loaded from conftest.py, so it serves ``pytest --benchmark-only`` and the plain
test run (where ``--benchmark-disable`` runs each benchmark once, untimed).
"""
from __future__ import annotations

import os

import pytest
import torch

from persample_core.grid import ROUNDS, SWEEPS
from persample_core import hardware
from persample_core.report import derive, summary_table

DEFAULT_STORAGE = "file://./.benchmarks"
RECORDS = pytest.StashKey[dict]()
MACHINE = pytest.StashKey[dict]()


def pytest_addoption(parser):
    group = parser.getgroup("persample")
    group.addoption("--sweep", choices=SWEEPS, default=os.environ.get("PERSAMPLE_SWEEP", "quick"),
                    help="quick (default, ~5 min on a 2-core CPU) or full (larger batches, more rounds)")
    group.addoption("--threads", type=int, default=None,
                    help="torch intra-op threads for the timed code (default: torch's own choice)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    os.environ["PERSAMPLE_SWEEP"] = config.getoption("sweep")
    threads = config.getoption("threads")
    if threads is not None:
        if threads < 1:
            raise pytest.UsageError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if not hasattr(config.option, "benchmark_storage"):
        return  # pytest-benchmark is not installed or disabled with -p no:benchmark
    # Runs are stored with their raw rounds (the gate tests on them) and per
    # hardware: pytest-benchmark's own folder name ignores the CPU model and GPU.
    config.option.benchmark_save_data = True
    info = hardware.machine_info()
    config.stash[MACHINE] = {**info, "hardware_id": hardware.hardware_id(info)}
    if config.option.benchmark_storage == DEFAULT_STORAGE:
        config.option.benchmark_storage = f"{DEFAULT_STORAGE}/{config.stash[MACHINE]['hardware_id']}"
    # The sweep sets rounds and time per point unless given on the command line
    # (pytest-benchmark's defaults are the quick sweep's).
    min_rounds, max_time = ROUNDS[config.getoption("sweep")]
    if config.option.benchmark_min_rounds == ROUNDS["quick"][0]:
        config.option.benchmark_min_rounds = min_rounds
    if float(config.option.benchmark_max_time) == ROUNDS["quick"][1]:
        config.option.benchmark_max_time = max_time
    config.stash[RECORDS] = {}


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["persample"] = config.stash[MACHINE]


def record(config, point, benchmark):
    """Remember a timed point; medians are read once the run is over."""
    config.stash[RECORDS][point] = benchmark


def _medians(config) -> dict:
    return {point: bench.stats.stats.median for point, bench in config.stash.get(RECORDS, {}).items()
            if bench.stats is not None}


def _memory(config) -> dict:
    return {point: (bench.extra_info.get("peak_memory_bytes"), bench.extra_info["gradient_bytes"])
            for point, bench in config.stash.get(RECORDS, {}).items()}


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    """Fill the derived figures in before pytest-benchmark saves and displays the run."""
    records = session.config.stash.get(RECORDS, {})
    for point, figures in derive(_medians(session.config)).items():
        records[point].extra_info.update(figures)
    yield


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    medians = _medians(config)
    if medians:
        terminalreporter.section(f"persample summary ({config.getoption('sweep')} sweep, "
                                 f"{torch.get_num_threads()} threads)")
        terminalreporter.write_line(summary_table(medians, _memory(config)))
        compiled = {point: bench.extra_info["compile_seconds"] for point, bench in config.stash[RECORDS].items()
                    if bench.extra_info.get("compile_seconds")}
        if compiled:
            terminalreporter.write_line("\ncompile time, spent in warm-up and kept out of the medians: " + ", ".join(
                f"{point.id} {seconds:.1f} s" for point, seconds in sorted(compiled.items())))
