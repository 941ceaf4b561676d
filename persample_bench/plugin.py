"""The pytest plugin of the suite: its options, and the grid's points as the parameters of a test, with their clocks.

The rest of a session's work is in modules of their own, registered here for
the session: ``settings`` (how the points are timed, from the options),
``progress`` (a line per point), ``results`` (the stored JSON and the summary
table). ``--persample-gate`` is the gate's own plugin
(``persample_gate.pytest_plugin``): the harness imports nothing of the gate's.

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

import functools
import os

import pytest

from persample_bench import progress, results
from persample_bench.runformat import (
    DEFAULT_DTYPE,
    DEFAULT_HEAP,
    HEAPS,
    OPTIONS_GROUP,
    TIMERS,
    batch_sizes,
    positive,
)
from persample_bench.settings import Settings

# persample_bench.grid.SWEEPS, named here to keep torch out of startup
SWEEP_CHOICES = ("mission", "quick", "full", "dp")


def pytest_addoption(parser):
    group = parser.getgroup(*OPTIONS_GROUP)
    group.addoption(
        "--persample-sweep",
        choices=SWEEP_CHOICES,
        default=os.environ.get("PERSAMPLE_SWEEP", "mission"),
        help="mission (default: loop and vmap with the floor, ~2 min on a 2-core CPU), quick (every method), "
        "full (larger batches, more precision) or dp (the DP-SGD step by each DP method, ghost clipping included, "
        "against the non-private step); default: PERSAMPLE_SWEEP where set (asv reads it too)",
    )
    group.addoption(
        "--persample-methods",
        default=None,
        help="comma-separated methods to time instead of the sweep's (its baseline is always timed: every speedup "
        "is over it, the loop's or, in the dp sweep, the non-private step's), e.g. vmap,expanded_weights; in the dp "
        "sweep DP methods, e.g. vmap,ghost",
    )
    group.addoption(
        "--persample-workload",
        action="append",
        default=None,
        metavar="SPEC",
        help="time this workload alone: a built-in (simple_cnn, mlp, tiny_transformer, resnet18_gn, char_lstm), a "
        "name a package registers, or MODULE:FUNCTION, a function make(batch_size, device, dtype, seed) -> (model, "
        "loss_fn, inputs, targets); repeatable (default: the sweep's; PERSAMPLE_WORKLOADS where set)",
    )
    group.addoption(
        "--persample-batch-sizes",
        type=batch_sizes,
        default=(),
        metavar="B,B,...",
        help="batch sizes of every workload timed, e.g. 1,8,64 (default: the sweep's, or a workload's own)",
    )
    group.addoption(
        "--persample-dtype",
        default=None,
        metavar="DTYPE,...",
        help="dtypes to time in, comma-separated: float32 (default), bfloat16, float16 (CUDA only); the model and "
        "its floating inputs are cast, each checked against float64 within its dtype's tolerance",
    )
    group.addoption(
        "--persample-precision",
        type=positive,
        default=None,
        help="time each point until the 95%% interval of its median is within +-this fraction (default: the "
        "sweep's: 0.03 for the speedup points, 0.05 for the others in the mission sweep)",
    )
    group.addoption(
        "--persample-max-time",
        type=positive,
        default=None,
        help="seconds a point is timed at most, its pilot included, whatever the precision reached, but for the "
        "least it needs: a pilot of two and ten rounds (default: the sweep's, 6 for the speedup points, 2 for the "
        "others)",
    )
    group.addoption(
        "--persample-threads",
        type=int,
        default=None,
        help="torch intra-op threads for the timed code (default: torch's)",
    )
    group.addoption(
        "--persample-device",
        action="append",
        default=None,
        metavar="DEVICE",
        help="time the points on this device: cpu, cuda (the current CUDA device) or cuda:N; repeatable (default: "
        "the CPU, and the current CUDA device where there is one; CUDA_VISIBLE_DEVICES chooses as well)",
    )
    group.addoption(
        "--persample-timer",
        choices=TIMERS,
        default="wall",
        help="wall (default): elapsed time, what a plain program measures; cpu: the process's CPU time on CPU "
        "points, steady on a shared machine, needs --persample-threads 1 (persample ab defaults to it; CUDA "
        "points are timed on the wall clock either way)",
    )
    group.addoption(
        "--persample-heap",
        choices=HEAPS,
        default=DEFAULT_HEAP,
        help="kept (default): glibc keeps freed memory, so a call's time is the method's, not the host's paging "
        "or the allocator's history; system: the allocator as a plain torch program has it (docs/measuring.md)",
    )


# The options' names before they carried the prefix (--gate: persample_gate.pytest_plugin's): given one, the
# session stops with the new name.
UNPREFIXED = ("--sweep", "--methods", "--precision", "--max-time", "--threads", "--timer", "--heap", "--gate")


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """An option persample named without its prefix (and no other plugin or conftest defines) stops the session in
    one line that names the new option, rather than pytest's "unrecognized arguments"."""
    outcome = yield  # the conftests' options are known from here on
    if outcome.excinfo is not None:  # a conftest failed to import: its error is the one to see
        return
    _, unknown = parser.parse_known_and_unknown_args([str(arg) for arg in args])
    for arg in unknown:
        name = arg.split("=", 1)[0]
        if name in UNPREFIXED:
            raise pytest.UsageError(f"{name} is now --persample-{name[2:]}: persample's options carry its prefix")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    methods = config.getoption("persample_methods")
    settings = Settings(
        sweep=config.getoption("persample_sweep"),
        methods=_listed(methods),
        workloads=config.getoption("persample_workload") or [],
        batch_sizes=config.getoption("persample_batch_sizes"),
        dtypes=_listed(config.getoption("persample_dtype")),
        timer=config.getoption("persample_timer"),
        heap=config.getoption("persample_heap"),
        precision_target=config.getoption("persample_precision"),
        max_time=config.getoption("persample_max_time"),
        progress=functools.partial(progress.write_line, config),
    )
    config.stash[results.SETTINGS] = settings
    config.pluginmanager.register(progress.Progress(settings), "persample-progress")
    config.pluginmanager.register(results, "persample-results")
    devices = config.getoption("persample_device") or ()
    for device in devices:
        from persample_bench.grid import check_device

        try:
            check_device(device)
        except ValueError as err:
            raise pytest.UsageError(f"--persample-device: {err}") from None
    if "cuda" in devices and any(device.startswith("cuda:") for device in devices):
        raise pytest.UsageError("--persample-device: cuda is the current CUDA device; name it or cuda:N, not both")
    _check_axes(config, settings)
    threads = config.getoption("persample_threads")
    if threads is not None or settings.timer != "wall":
        import torch

        from persample_bench.timing import check_timer

        if threads is not None:
            if threads < 1:
                raise pytest.UsageError(f"--persample-threads must be at least 1, got {threads}")
            torch.set_num_threads(threads)
        try:  # the timer is the clock of CPU points only; without --persample-device there are some
            check_timer(settings.timer, torch.get_num_threads(), devices or ("cpu",))
        except ValueError as err:
            raise pytest.UsageError(str(err)) from None


def _listed(text: str | None) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()] if text else []


def _check_axes(config, settings) -> None:
    """The dtypes and workloads named, checked at start-up (each workload built with two samples on the first
    device asked for, in each dtype, and held to the contract, which imports torch: only where one is named), or
    the session stops in one line naming the option."""
    devices = config.getoption("persample_device") or ()
    if settings.dtypes:
        from persample_bench.grid import check_dtypes

        try:
            settings.dtypes = check_dtypes(settings.dtypes)
        except ValueError as err:
            raise pytest.UsageError(f"--persample-dtype: {err}") from None
        if settings.sweep == "dp" and settings.dtypes != [DEFAULT_DTYPE]:
            raise pytest.UsageError(
                "--persample-dtype: the dp sweep times float32 only (the DP check has no low-precision rule yet); "
                "drop the option, or time the per-sample gradients in other dtypes with another sweep"
            )
        if "float16" in settings.dtypes and not any(d.startswith("cuda") for d in devices or _devices(config)):
            raise pytest.UsageError(
                "--persample-dtype: float16 is timed on CUDA only and this session times the CPU alone; use "
                "bfloat16, or add --persample-device cuda"
            )
    if settings.workloads:
        import torch

        from persample_core import make_workload
        from persample_core.workloads import batch_sizes

        try:  # the contract, before any point is timed
            for spec in settings.workloads:
                for dtype in settings.dtypes or (DEFAULT_DTYPE,):
                    cuda = next((device for device in devices if device.startswith("cuda")), "cuda")
                    device = cuda if dtype == "float16" else devices[0] if devices else "cpu"  # float16: CUDA's
                    make_workload(spec, batch_size=2, device=device, dtype=getattr(torch, dtype))
                batch_sizes(spec)
        except ValueError as err:
            raise pytest.UsageError(f"--persample-workload: {err}") from None


def pytest_generate_tests(metafunc):
    """A test that takes ``persample_point`` runs at every point of the sweep: its methods (or
    --persample-methods) and the floor, on its workloads (or --persample-workload's) at their batch sizes (or
    --persample-batch-sizes), in float32 (or --persample-dtype's)."""
    if "persample_point" in metafunc.fixturenames:
        from persample_bench.grid import SWEEPS, check_methods, points

        settings = metafunc.config.stash[results.SETTINGS]
        try:
            methods = check_methods(settings.methods, settings.sweep) if settings.methods else None
        except ValueError as err:
            raise pytest.UsageError(f"--persample-methods: {err}") from None
        try:
            chosen = points(
                settings.sweep,
                methods=methods,
                floor=SWEEPS[settings.sweep].floor,
                devices=_devices(metafunc.config),
                workloads=settings.workloads,
                batch_sizes=settings.batch_sizes,
                dtypes=settings.dtypes or (DEFAULT_DTYPE,),
            )
        except ValueError as err:  # a registered workload that does not load, or a bad PERSAMPLE_WORKLOADS
            # pytest.UsageError is a collection error here, with a traceback; exit says it in one line, as usage
            pytest.exit(f"persample: {err}", returncode=pytest.ExitCode.USAGE_ERROR)
        metafunc.parametrize("persample_point", chosen, ids=lambda point: point.id)


def _devices(config) -> tuple:
    """The devices the points are timed on: --persample-device's (checked at start-up), or the CPU and, where CUDA
    is available (checked without initialising it), the current CUDA device."""
    import torch

    from persample_bench.grid import DEVICES

    if asked := config.getoption("persample_device"):
        return tuple(dict.fromkeys(asked))
    return DEVICES if torch.cuda.is_available() else tuple(d for d in DEVICES if d != "cuda")


@pytest.fixture
def persample_settings(pytestconfig) -> Settings:
    """How this session times its points (``persample_bench.bench.time_point`` takes it)."""
    settings = pytestconfig.stash[results.SETTINGS]
    settings.start()  # the heap policy applies before the first point is built
    return settings


def _point(item):
    return getattr(item, "callspec", None) and item.callspec.params.get("persample_point")


def pytest_collection_modifyitems(config, items):
    """Each point's clock, as pytest-benchmark takes a clock: its ``benchmark(timer=...)`` marker."""
    settings = config.stash[results.SETTINGS]
    for item in items:
        if (point := _point(item)) is not None:
            item.add_marker(pytest.mark.benchmark(timer=settings.clock(point)))


def pytest_collection_finish(session):
    """The points this session will run (-k and --deselect applied), in order, for the progress lines."""
    session.config.stash[results.SETTINGS].points.update(
        (item.nodeid, point) for item in session.items if (point := _point(item)) is not None
    )
