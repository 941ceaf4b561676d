"""The pytest plugin of the suite: options, the grid's points, their clocks and precision, progress, hardware
in machine_info, derived figures in the stored JSON, the summary table at the end, and ``--persample-gate``, which
gates the run against the runs stored before it.

Registered as a ``pytest11`` entry point (pyproject.toml), as pytest-benchmark
registers its own, so it is loaded wherever the package is installed: a test
that asks for the ``persample_point`` fixture is run once per point of the
sweep (``pytest --benchmark-only`` times them; ``--benchmark-disable`` runs
each once, untimed), with ``persample_settings`` saying how.

Loaded into every pytest session of an environment that has the package, the
plugin is a guest there: its options carry the ``--persample-`` prefix (as
pytest-benchmark's carry ``--benchmark-``), and a session that collects no
persample point is left as it was: no environment variable, no pytest-benchmark
setting changed, no torch imported (tests/test_plugin.py runs such a session).
The pytest-benchmark hooks are optional (an environment with the library alone
has no pytest-benchmark).

Runs are stored where pytest-benchmark stores them (``.benchmarks/<machine
id>/``), so its own ``pytest-benchmark list|compare`` and
``--benchmark-compare`` find them; pytest-benchmark's machine id ignores the
CPU model and the GPU, so the hardware is recorded in each run's
``machine_info["persample"]``, the gate picks runs by it, and
``--benchmark-compare`` against another hardware's run is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import time
from dataclasses import dataclass, field

import pytest

SETTINGS = pytest.StashKey["Settings"]()
GATE = pytest.StashKey[object]()  # the newest run of this hardware stored before this session, or None
SWEEP_CHOICES = ("mission", "quick", "full")  # persample_bench.grid.SWEEPS, named here to keep torch out of startup
HEAP_CHOICES = ("kept", "system")  # persample_bench.memory.HEAP_POLICIES, likewise
# The progress line's pace: (elapsed + this) / (planned + this), the plan's until the points have run about this
# many seconds, theirs after; a compile or a slow first point does not stretch the estimate to hours.
ESTIMATE_WEIGHT = 10.0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def pytest_addoption(parser):
    group = parser.getgroup("persample", "persample: per-sample gradient benchmarks")
    group.addoption(
        "--persample-sweep",
        choices=SWEEP_CHOICES,
        default=os.environ.get("PERSAMPLE_SWEEP", "mission"),
        help="mission (default: loop and vmap with the floor, ~2 min on a 2-core CPU), quick (every method) or "
        "full (larger batches, more precision); default: PERSAMPLE_SWEEP where set (asv reads it too)",
    )
    group.addoption(
        "--persample-methods",
        default=None,
        help="comma-separated methods to time instead of the sweep's (the loop is always timed: every speedup is "
        "over it), e.g. vmap,expanded_weights",
    )
    group.addoption(
        "--persample-precision",
        type=_positive,
        default=None,
        help="time each point until the 95%% interval of its median is within +-this fraction (default: the "
        "sweep's: 0.03 for the speedup points, 0.05 for the others in the mission sweep)",
    )
    group.addoption(
        "--persample-max-time",
        type=_positive,
        default=None,
        help="seconds of rounds per point at most, whatever the precision reached (default: the sweep's, 6 for "
        "the speedup points, 2 for the others)",
    )
    group.addoption(
        "--persample-threads",
        type=int,
        default=None,
        help="torch intra-op threads for the timed code (default: torch's)",
    )
    group.addoption(
        "--persample-timer",
        choices=("wall", "cpu"),
        default="wall",
        help="wall (default): elapsed time; cpu: the process's CPU time on CPU points, steady on a shared "
        "machine, needs --persample-threads 1 (CUDA points are timed on the wall clock either way)",
    )
    group.addoption(
        "--persample-heap",
        choices=HEAP_CHOICES,
        default="kept",
        help="kept (default): glibc keeps freed memory, so a call's time is the method's, not the host's paging; "
        "system: the allocator as a plain torch program has it (docs/measuring.md)",
    )
    group.addoption(
        "--persample-gate",
        action="store_true",
        help="store this run and gate it against the newest run stored before it on this hardware "
        "(persample compare, default thresholds): exit status 1 on a regression",
    )


# The options' names before they carried the prefix: given one, the session stops with the new name.
UNPREFIXED = ("--sweep", "--methods", "--precision", "--max-time", "--threads", "--timer", "--heap", "--gate")


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """An option persample named without its prefix (and no other plugin or conftest defines) stops the session in
    one line that names the new option, rather than pytest's "unrecognized arguments"."""
    yield  # the conftests' options are known from here on
    _, unknown = parser.parse_known_and_unknown_args([str(arg) for arg in args])
    for arg in unknown:
        name = arg.split("=", 1)[0]
        if name in UNPREFIXED:
            raise pytest.UsageError(f"{name} is now --persample-{name[2:]}: persample's options carry its prefix")


@dataclass
class Settings:
    """How this session times its points, from the command line; shared by every point."""

    config: pytest.Config
    sweep: str
    methods: list
    timer: str
    heap: str
    machine: dict = field(default_factory=dict)  # machine_info["persample"], filled once the suite runs
    records: dict = field(default_factory=dict)  # Point -> its benchmark fixture, once timed
    points: dict = field(default_factory=dict)  # nodeid -> Point, as collected
    started: float = field(default_factory=time.perf_counter)

    def clock_name(self, point) -> str:
        from persample_bench.timing import clock_for

        return clock_for(self.timer, point.device)

    def clock(self, point):
        from persample_bench.timing import CLOCKS

        return CLOCKS[self.clock_name(point)]

    def precision(self, *, gated: bool):
        """The sweep's precision for a point (``gated``: interleaved with the baseline), as the options change it."""
        from dataclasses import replace

        from persample_bench.grid import SWEEPS

        chosen = SWEEPS[self.sweep].gated if gated else SWEEPS[self.sweep].plain
        given = {
            name: value
            for name, value in (
                ("target", self.config.getoption("persample_precision")),
                ("max_time", self.config.getoption("persample_max_time")),
            )
            if value is not None
        }
        return replace(chosen, **given)

    def progress(self, line: str) -> None:
        """Write ``line`` on the terminal now, also from inside a test whose output is captured."""
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if terminal is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if terminal._tw.width_of_current_line:  # after -q's progress marks, which ensure_newline leaves alone
                terminal.write("\n")
            terminal.write_line(f"persample: {line}")

    def cost(self, point) -> float:
        """A point's seconds, roughly, for the progress line's estimate: its time cap, and the float64 check and the
        fewest rounds, which grow with the batch."""
        from persample_bench.bench import INTERLEAVED

        return self.precision(gated=point.method in INTERLEAVED).max_time + point.batch_size / 16

    def record(self, point, benchmark) -> None:
        """Remember a timed point; medians are read once the run is over."""
        self.records[point] = benchmark

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report):
        """One line per point timed, as it completes: what it measured, how precisely, and about how long the rest
        takes (after pytest's own mark for the test)."""
        point = self.points.get(report.nodeid)
        if report.when != "call" or point not in self.records:
            return  # not a point, skipped, failed, or run once untimed (--benchmark-disable)
        order = list(self.points.values())
        index = order.index(point) + 1
        elapsed = time.perf_counter() - self.started
        spent, left = (sum(self.cost(p) for p in part) for part in (order[:index], order[index:]))
        eta = f", about {_minutes(remaining(elapsed, spent, left))} to go" if left else ""
        line = _measured(point, self.records[point])
        self.progress(f"[{index}/{len(order)}] {line}  ({_minutes(elapsed)} so far{eta})")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    methods = config.getoption("persample_methods")
    config.stash[SETTINGS] = Settings(
        config,
        config.getoption("persample_sweep"),
        [name.strip() for name in methods.split(",") if name.strip()] if methods else [],
        config.getoption("persample_timer"),
        config.getoption("persample_heap"),
    )
    config.pluginmanager.register(config.stash[SETTINGS], "persample-settings")
    threads = config.getoption("persample_threads")
    if threads is not None or config.getoption("persample_timer") != "wall":
        import torch

        from persample_bench.timing import check_timer

        if threads is not None:
            if threads < 1:
                raise pytest.UsageError(f"--persample-threads must be at least 1, got {threads}")
            torch.set_num_threads(threads)
        try:
            check_timer(config.getoption("persample_timer"), torch.get_num_threads())
        except ValueError as err:
            raise pytest.UsageError(str(err)) from None
    if (
        config.getoption("persample_gate")
        and hasattr(config.option, "benchmark_storage")
        and not (config.option.benchmark_autosave or config.option.benchmark_save)
    ):
        config.option.benchmark_autosave = True


def _machine(config) -> dict:
    """This session's machine_info["persample"]: the hardware and how the run times (made once)."""
    settings = config.stash[SETTINGS]
    if not settings.machine:
        from persample_bench import hardware, memory
        from persample_core import BASELINE
        from persample_gate.runs import FLOOR

        settings.machine.update(
            hardware.machine_info(),
            heap=memory.apply_heap_policy(settings.heap),
            heap_policy=settings.heap,
            timer=settings.timer,
            sweep=settings.sweep,
            baseline=BASELINE,
            floor=FLOOR,
        )
    return settings.machine


def pytest_generate_tests(metafunc):
    """A test that takes ``persample_point`` runs at every point of the sweep: its methods (or
    --persample-methods) and the floor."""
    if "persample_point" in metafunc.fixturenames:
        from persample_bench.grid import check_methods, points
        from persample_gate.runs import FLOOR

        settings = metafunc.config.stash[SETTINGS]
        try:
            methods = check_methods(settings.methods) if settings.methods else None
        except ValueError as err:
            raise pytest.UsageError(f"--persample-methods: {err}") from None
        chosen = points(settings.sweep, methods=methods, floor=FLOOR, devices=_devices())
        metafunc.parametrize("persample_point", chosen, ids=lambda point: point.id)


def _devices() -> tuple:
    """The devices of this machine: CUDA points exist where CUDA does (checked without initialising it)."""
    import torch

    from persample_bench.grid import DEVICES

    return DEVICES if torch.cuda.is_available() else tuple(d for d in DEVICES if d != "cuda")


@pytest.fixture
def persample_settings(pytestconfig) -> Settings:
    """How this session times its points (``persample_bench.bench.time_point`` takes it)."""
    settings = pytestconfig.stash[SETTINGS]
    _machine(pytestconfig)  # the heap policy applies before the first point is built
    return settings


def pytest_sessionstart(session):
    if session.config.getoption("persample_gate") and hasattr(session.config.option, "benchmark_storage"):
        session.config.stash[GATE] = _newest_stored(session.config)


def _point(item):
    return getattr(item, "callspec", None) and item.callspec.params.get("persample_point")


def pytest_collection_modifyitems(config, items):
    """Each point's clock, as pytest-benchmark takes a clock: its ``benchmark(timer=...)`` marker."""
    settings = config.stash[SETTINGS]
    for item in items:
        if (point := _point(item)) is not None:
            item.add_marker(pytest.mark.benchmark(timer=settings.clock(point)))


def pytest_collection_finish(session):
    """The points this session will run (-k and --deselect applied), in order, for the progress lines."""
    session.config.stash[SETTINGS].points.update(
        (item.nodeid, point) for item in session.items if (point := _point(item)) is not None
    )


def remaining(elapsed: float, planned: float, left: float) -> float:
    """Seconds left, from the plan's seconds ``left`` at the pace of the points so far (``elapsed`` for
    ``planned``), weighted towards the plan while little has run (``ESTIMATE_WEIGHT``)."""
    return left * (elapsed + ESTIMATE_WEIGHT) / (planned + ESTIMATE_WEIGHT)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _interleaved(timed) -> dict:
    """``{point: speedup}`` of the points timed in rounds with the loop, from ``(point, rounds, extra_info)``."""
    from persample_gate.summary import interleaved_speedup

    return {
        point: interleaved_speedup(rounds, info["baseline_rounds"])
        for point, rounds, info in timed
        if "baseline_rounds" in info
    }


def _measured(point, bench) -> str:
    """A timed point in a line: its median, its speedup where interleaved, the precision reached and how."""
    from persample_gate.summary import interleaved_speedup

    info, stats = bench.extra_info, bench.stats.stats
    text = f"{point.id} {stats.median * 1e3:.3g} ms"
    if "baseline_rounds" in info:
        text += f", {interleaved_speedup(stats.data, info['baseline_rounds']):.2f}x the loop"
    target, cap = info["precision_target"], info["max_time"]
    missed = "" if info["resolved"] else f"; short of +-{target:.0%} (cap {cap:g} s)"
    return f"{text} +-{info['precision']:.1%} ({info['rounds']} rounds{missed})"


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    if config.stash[SETTINGS].records or config.stash[SETTINGS].machine:
        machine_info["persample"] = _machine(config)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark):
    """``--benchmark-compare`` against a persample run of other hardware is refused, naming what differs."""
    theirs = compared_benchmark.get("machine_info", {}).get("persample")
    if theirs is None:
        return
    from persample_gate.machine import hardware_differences

    differences = hardware_differences(_machine(config), theirs)
    if differences:
        raise pytest.UsageError(
            f"--benchmark-compare: that run comes from other hardware ({'; '.join(differences)}); name a run of "
            "this machine (persample runs lists them with their hardware)"
        )


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Each point's raw rounds and derived figures (time per sample, speedup, multiple of the floor) in the stored
    run. The gate tests on the rounds, so the suite's points carry them whatever ``--benchmark-save-data`` says;
    other benchmarks of the session are stored as pytest-benchmark would store them."""
    from persample_gate.runs import Point
    from persample_gate.summary import derive

    machine = output_json["machine_info"].get("persample")
    ours = [bench for bench in output_json["benchmarks"] if {"workload", "method"} <= bench["extra_info"].keys()]
    if machine is None or not ours:
        return
    rounds = {bench.fullname: bench.stats.data for bench in benchmarks}
    for bench in ours:
        bench["stats"].setdefault("data", list(rounds[bench["fullname"]]))
    by_point = {Point(*(b["extra_info"][k] for k in ("workload", "method", "batch_size", "device"))): b for b in ours}
    medians = {point: bench["stats"]["median"] for point, bench in by_point.items()}
    interleaved = _interleaved(
        (point, bench["stats"]["data"], bench["extra_info"]) for point, bench in by_point.items()
    )
    derived = derive(medians, baseline=machine["baseline"], floor_name=machine["floor"], interleaved=interleaved)
    for point, figures in derived.items():
        by_point[point]["extra_info"].update(figures)


def _storage(config):
    from pathlib import Path

    return Path(config.option.benchmark_storage.removeprefix("file://"))


def _newest_stored(config):
    from persample_gate import history

    stored = history.stored(_storage(config), _machine(config)["hardware_id"])
    return stored[-1] if stored else None


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session):
    yield
    if GATE in session.config.stash:  # pytest-benchmark has stored the run by now
        _gate(session)


def _gate(session):
    """``persample compare`` of the run just stored against the one stored before it; sets the exit status."""
    from persample_gate import cli

    baseline, candidate = session.config.stash[GATE], _newest_stored(session.config)
    if candidate is None or candidate == baseline:
        code, report = cli.OK, "nothing to gate: this run stored no timed benchmark"
    elif baseline is None:
        code, report = cli.OK, f"no baseline yet on this hardware: {candidate.name} is the baseline for the next run"
    else:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli.main(["--storage", str(_storage(session.config)), "compare", str(baseline), str(candidate)])
        report = out.getvalue().rstrip()
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.section("persample gate")
        terminal.write_line(report)
    if code == cli.REGRESSION:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif code not in (cli.OK, cli.NO_VERDICT):  # the baseline cannot be read, or was timed differently
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    settings = config.stash.get(SETTINGS, None)
    if settings is None or not settings.records:
        return
    from persample_gate.summary import summary_table

    machine = _machine(config)
    records = settings.records
    medians = {point: bench.stats.stats.median for point, bench in records.items()}
    interleaved = _interleaved((point, bench.stats.stats.data, bench.extra_info) for point, bench in records.items())
    memory = {p: (b.extra_info.get("peak_memory_bytes"), b.extra_info["gradient_bytes"]) for p, b in records.items()}
    gated, plain = settings.precision(gated=True), settings.precision(gated=False)
    terminalreporter.section(
        f"persample summary: {settings.sweep} sweep, {machine['torch_threads']} torch thread(s), {settings.timer} "
        f"clock, heap {settings.heap}"
    )
    terminalreporter.write_line(
        f"each point timed until its median is known within +-{gated.target:.0%} (speedup points) / "
        f"+-{plain.target:.0%} (others), or for {gated.max_time:g} s / {plain.max_time:g} s; "
        f"{machine['hardware_id']}, torch {machine['torch_version']}"
    )
    terminalreporter.write_line(
        summary_table(
            medians, memory, baseline=machine["baseline"], floor_name=machine["floor"], interleaved=interleaved
        )
    )
    short = [point.id for point, bench in sorted(records.items()) if not bench.extra_info["resolved"]]
    if short:
        terminalreporter.write_line(
            f"\nshort of the precision ({len(short)}): {', '.join(short)}; their medians are rougher (a larger "
            "--persample-max-time gives them more rounds)"
        )
    compiled = {p: b.extra_info["compile_seconds"] for p, b in records.items() if b.extra_info.get("compile_seconds")}
    if compiled:
        terminalreporter.write_line(
            "\ncompile time, spent in warm-up and kept out of the medians: "
            + ", ".join(f"{point.id} {seconds:.1f} s" for point, seconds in sorted(compiled.items()))
        )
