import contextlib
import io
import os
import signal
import tempfile
from pathlib import Path

import pytest
import torch

from persample_core import MethodUnavailable

REPO = Path(__file__).resolve().parent.parent
# Real runs of the suite, recorded once (tests/data/runs/README.md says how): the gate, history, plot and
# sensitivity tests read them instead of timing anything.
RECORDED = REPO / "tests" / "data" / "runs"

CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
)
DEVICES = ["cpu", CUDA]


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def seed(request):
    """Fresh weights and data: each seed builds a different workload."""
    return request.param


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """A method that cannot run here (an optional package missing, a layer it does not
    support) is skipped with its reason, in every test, rather than failed."""
    try:
        return (yield)
    except MethodUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture
def small_chunks(monkeypatch):
    """At its default chunk size of 16, vmap_chunked is plain vmap at every batch size
    tested here; chunks of 2 make it split, with an uneven last chunk at odd sizes.
    Correctness tests only: the benchmarks time the default."""
    monkeypatch.setenv("PERSAMPLE_CHUNK_SIZE", "2")


def check_compiled_once(method, seed, batch_size=16):
    """vmap_compiled compiles anew for every model and batch size (seconds each, minutes with a cold inductor
    cache: docs/studies/2026-11-28-method-costs.md), so a grid checks it at seed 0 and
    batch size 16 only (or at seed 0 where the batch size is fixed)."""
    if method == "vmap_compiled" and (seed, batch_size) != (0, 16):
        pytest.skip("vmap_compiled is checked once per workload (seed 0, batch 16): every point compiles anew")


def _too_long(signum, frame):
    raise TimeoutError("persample ran past its limit in a test")


def persample(*args, cwd=REPO, env=None, timeout=300):
    """``persample ARGS`` run in this process (``cli.main``, as the console script runs it), in ``cwd``, with ``env``
    as the environment where given: (exit status, stdout and stderr). In-process: a second interpreter would spend
    a second importing scipy for each call, and the console script itself is run once (tests/test_cli.py). A call
    past ``timeout`` seconds (a hung worker) raises TimeoutError, and ab's folders and workers are cleaned up."""
    from persample_gate import cli

    out, saved_env, saved_cwd, saved_tmp = io.StringIO(), dict(os.environ), os.getcwd(), tempfile.tempdir
    previous = signal.signal(signal.SIGALRM, _too_long)
    signal.alarm(timeout)
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        tempfile.tempdir = None  # read TMPDIR anew, as a fresh process would
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = cli.main([str(arg) for arg in args])
            except SystemExit as exit:  # argparse's refusal of an option
                code = exit.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        tempfile.tempdir = saved_tmp
    return code, out.getvalue()


@pytest.fixture(scope="session")
def recorded():
    """The recorded runs, oldest first: seven of unchanged code, then one with vmap doing twice the work."""
    runs = sorted(RECORDED.glob("*/*.json"))
    assert len(runs) == 8, runs
    return {"unchanged": runs[:7], "slowed": runs[7], "storage": RECORDED}


@pytest.fixture
def storage(tmp_path, recorded):
    """A copy of the recorded storage, for tests that add to it or break it."""
    import shutil

    shutil.copytree(recorded["storage"], tmp_path / "benchmarks")
    return tmp_path / "benchmarks"


def pytest_collection_modifyitems(config, items):
    """``pytest --benchmark-only`` at the root, the mission's command, runs the benchmark suite alone and ends on its
    summary: the other tests are deselected (one count in pytest's last line) rather than each reported as
    pytest-benchmark's skip ("Skipping non-benchmark"), a screen of lines under the summary with ``-ra``."""
    if not config.getoption("benchmark_only", default=False):
        return
    timed = [item for item in items if "benchmark" in getattr(item, "fixturenames", ())]
    if len(timed) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in timed])
        items[:] = timed
