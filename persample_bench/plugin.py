"""The pytest plugin of the suite: options, the grid's points, hardware in machine_info,
per-hardware storage, derived figures in extra_info, the summary table at the
end, and ``--gate``, which gates the run against the one stored before it.

Registered as a ``pytest11`` entry point (pyproject.toml), as pytest-benchmark
registers its own, so it is loaded wherever the package is installed: a test
that asks for the ``persample_point`` fixture is run once per point of the
sweep (``pytest --benchmark-only`` times them; ``--benchmark-disable`` runs
each once, untimed).

Loaded into every pytest session of an environment that has the package, the
plugin stays out of the way of other suites: torch, the harness and the gate
are imported when a session asks for what needs them, and the pytest-benchmark
hooks are optional (an environment with the library alone has no pytest-benchmark).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

DEFAULT_STORAGE = "file://./.benchmarks"
RECORDS = pytest.StashKey[dict]()
MACHINE = pytest.StashKey[dict]()
GATE = pytest.StashKey[tuple]()  # (storage folder, newest run stored there before this one)


def pytest_addoption(parser):
    group = parser.getgroup("persample")
    group.addoption(
        "--sweep",
        choices=("quick", "full"),
        default=os.environ.get("PERSAMPLE_SWEEP", "quick"),
        help="quick (default, ~9 min on a 2-core CPU, one thread) or full (larger batches, more rounds)",
    )
    group.addoption(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for the timed code (default: torch's own choice)",
    )
    group.addoption(
        "--timer",
        choices=("wall", "cpu"),
        default="wall",
        help="wall (default): elapsed time; cpu: the process's CPU time on CPU points, steady on a shared "
        "machine, needs --threads 1 (CUDA points are timed on the wall clock either way)",
    )
    group.addoption(
        "--gate",
        action="store_true",
        help="store this run and gate it against the newest run stored before it on this hardware "
        "(persample compare, default thresholds): exit status 1 on a regression",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    os.environ["PERSAMPLE_SWEEP"] = config.getoption("sweep")
    threads = config.getoption("threads")
    if threads is not None or config.getoption("timer") != "wall":
        import torch

        from persample_bench.timing import check_timer

        if threads is not None:
            if threads < 1:
                raise pytest.UsageError(f"--threads must be at least 1, got {threads}")
            torch.set_num_threads(threads)
        try:
            check_timer(config.getoption("timer"), torch.get_num_threads())
        except ValueError as err:
            raise pytest.UsageError(str(err)) from None
    if not hasattr(config.option, "benchmark_storage"):
        return  # pytest-benchmark is not installed or disabled with -p no:benchmark
    from persample_bench import hardware, memory
    from persample_bench.grid import ROUNDS
    from persample_core import BASELINE
    from persample_gate import history
    from persample_gate.runs import FLOOR

    # Runs are stored with their raw rounds (the gate tests on them) and per
    # hardware: pytest-benchmark's own folder name ignores the CPU model and GPU.
    config.option.benchmark_save_data = True
    info = hardware.machine_info()
    config.stash[MACHINE] = {
        **info,
        "heap": memory.keep_freed_memory(),
        "timer": config.getoption("timer"),
        "baseline": BASELINE,
        "floor": FLOOR,
    }
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
    if config.getoption("gate"):
        if not (config.option.benchmark_autosave or config.option.benchmark_save):
            from pytest_benchmark.utils import get_tag

            config.option.benchmark_autosave = get_tag()  # the name --benchmark-autosave gives a run
        folder = Path(config.option.benchmark_storage.removeprefix("file://"))
        config.stash[GATE] = (folder, (history.stored(folder) or [None])[-1])


def pytest_generate_tests(metafunc):
    """A test that takes ``persample_point`` runs at every point of the sweep, every method and the floor."""
    if "persample_point" in metafunc.fixturenames:
        from persample_bench.grid import points
        from persample_bench.prepare import methods_with_floor

        metafunc.parametrize("persample_point", points(methods=methods_with_floor()), ids=lambda p: p.id)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["persample"] = config.stash[MACHINE]


def record(config, point, benchmark):
    """Remember a timed point; medians are read once the run is over."""
    config.stash[RECORDS][point] = benchmark


def _medians(config) -> dict:
    return {
        point: bench.stats.stats.median
        for point, bench in config.stash.get(RECORDS, {}).items()
        if bench.stats is not None
    }


def _names(config) -> dict:
    """What the speedup is taken over and what the floor is called, as the run records them."""
    machine = config.stash[MACHINE]
    return {"baseline": machine["baseline"], "floor_name": machine["floor"]}


def _memory(config) -> dict:
    return {
        point: (bench.extra_info.get("peak_memory_bytes"), bench.extra_info["gradient_bytes"])
        for point, bench in config.stash.get(RECORDS, {}).items()
    }


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    """Fill the derived figures in before pytest-benchmark saves and displays the run."""
    from persample_gate.summary import derive

    records = session.config.stash.get(RECORDS, {})
    for point, figures in derive(_medians(session.config), **_names(session.config)).items():
        records[point].extra_info.update(figures)
    yield
    if GATE in session.config.stash:  # pytest-benchmark has stored the run by now
        _gate(session)


def _gate(session):
    """``persample compare`` of the run just stored against the one stored before it; sets the exit status."""
    from persample_gate import cli, history

    folder, baseline = session.config.stash[GATE]
    stored = history.stored(folder)
    candidate = stored[-1] if stored and stored[-1] != baseline else None
    if candidate is None:
        code, report = cli.OK, "nothing to gate: this run stored no timed benchmark"
    elif baseline is None:
        code, report = cli.OK, f"no baseline yet under {folder}: {candidate.name} is the baseline for the next run"
    else:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli.main(["compare", str(baseline), str(candidate)])
        report = out.getvalue().rstrip()
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.section("persample gate")
        terminal.write_line(report)
    if code == cli.REGRESSION:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif code != cli.OK:  # the baseline cannot be read, or was timed differently
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    medians = _medians(config)
    if medians:
        import torch

        from persample_gate.summary import summary_table

        terminalreporter.section(
            f"persample summary ({config.getoption('sweep')} sweep, {torch.get_num_threads()} threads)"
        )
        terminalreporter.write_line(summary_table(medians, _memory(config), **_names(config)))
        compiled = {
            point: bench.extra_info["compile_seconds"]
            for point, bench in config.stash[RECORDS].items()
            if bench.extra_info.get("compile_seconds")
        }
        if compiled:
            terminalreporter.write_line(
                "\ncompile time, spent in warm-up and kept out of the medians: "
                + ", ".join(f"{point.id} {seconds:.1f} s" for point, seconds in sorted(compiled.items()))
            )
