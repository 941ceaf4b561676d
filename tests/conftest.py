import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from persample_core import MethodUnavailable
from persample_gate.gate import MIN_HISTORY

REPO = Path(__file__).resolve().parent.parent
# A -k expression for the loop, vmap and floor points alone (benchmark ids are
# workload-method-B<size>-device), to keep end-to-end runs of the suite short.
CORE_METHODS = "(-loop- or -vmap- or -floor-)"

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
    """vmap_compiled compiles anew for every model and batch size (2-30 s each on a
    2-core CPU, more with a cold inductor cache), so a grid checks it at seed 0 and
    batch size 16 only (or at seed 0 where the batch size is fixed)."""
    if method == "vmap_compiled" and (seed, batch_size) != (0, 16):
        pytest.skip("vmap_compiled is checked once per workload (seed 0, batch 16): every point compiles anew")


def bench(storage, *extra, slowdown=0.0, expect=0):
    """One real, stored run of a small grid (mlp at B=64: loop, vmap interleaved, the floor): (path, output).

    One torch thread, timed on the CPU clock, as README recommends for gating on
    a shared machine: two threads get descheduled inside the loop's many small
    parallel regions, and elapsed time counts the spells when other jobs ran.
    """
    env = {**os.environ, "PERSAMPLE_TEST_SLOWDOWN": str(slowdown)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_benchmarks.py",
            "-p",
            "tests.slowdown_plugin",
            "-p",
            "no:cacheprovider",
            "--benchmark-only",
            "-k",
            f"mlp and B64- and cpu and {CORE_METHODS}",
            "--benchmark-autosave",
            "--benchmark-min-rounds=12",
            "--threads=1",
            "--timer=cpu",
            f"--benchmark-storage=file://{storage}",
            "-q",
            *extra,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sorted(Path(storage).glob("*/*.json"))[-1], proc.stdout


def persample(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "persample_gate.cli", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


# Unchanged runs the gate tests store: the last is compared with the noise
# between runs known from the ones before it, as on a machine with history.
UNCHANGED_RUNS = MIN_HISTORY + 1


@pytest.fixture(scope="session")
def stored_runs(tmp_path_factory):
    """Unchanged runs stored in turn, then a slowed one; the first and the slowed one gated as they finish (--gate)."""
    storage = tmp_path_factory.mktemp("benchmarks")
    base, first_gate = bench(storage, "--gate")
    unchanged = [base, *(bench(storage)[0] for _ in range(UNCHANGED_RUNS - 1))]
    slowed, slowed_gate = bench(storage, "--gate", slowdown=1.0, expect=1)
    return {
        "base": base,
        "rerun": unchanged[1],
        "unchanged": unchanged,
        "slowed": slowed,
        "first_gate": first_gate,
        "slowed_gate": slowed_gate,
    }
