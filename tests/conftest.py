import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def bench(storage, *extra, slowdown=0.0):
    """One real, stored run of a small grid: mlp at B=64, loop and vmap (interleaved) and the floor."""
    env = {**os.environ, "PERSAMPLE_TEST_SLOWDOWN": str(slowdown)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_benchmarks.py", "-p", "tests.slowdown_plugin",
         "-p", "no:cacheprovider", "--benchmark-only", "-k", f"mlp and B64- and cpu and {CORE_METHODS}",
         "--benchmark-autosave", "--benchmark-min-rounds=12", f"--benchmark-storage=file://{storage}", "-q", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sorted(Path(storage).glob("*/*.json"))[-1]


def persample(*args):
    proc = subprocess.run([sys.executable, "-m", "persample_core.cli", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def stored_runs(tmp_path_factory):
    storage = tmp_path_factory.mktemp("benchmarks")
    return {"base": bench(storage), "rerun": bench(storage), "slowed": bench(storage, slowdown=0.5)}


pytest_plugins = ["tests.benchmark_plugin"]
