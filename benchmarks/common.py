"""What every benchmark here shares: today's harness, today's grid as params, and a setup that skips, saying why.

asv installs the package from the commit under test and takes this suite from
today's tree. Only the code under test, ``persample_core``, may come from that
commit: the code that times (``persample_bench``, with its run format) is
loaded from today's tree beside this suite, so every commit is timed by
today's rules (heap policy, interleaving, warm-up) and a change to the harness shows in no commit's history.

Device handling lives here once. Nothing here touches CUDA at import: asv
imports this suite to discover it and, with ``--launch-method forkserver``,
forks every benchmark from the process that imported it, and a child forked
after CUDA was initialised cannot use CUDA.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from asv_runner.benchmarks.mark import SkipNotImplemented

REPO = Path(__file__).resolve().parents[1]
TODAYS = ("persample_bench",)  # the harness, with the run format (persample_bench.runformat)


def from_todays_tree(name: str):
    """Import package ``name`` from the source tree beside this suite, whatever version is installed."""
    spec = importlib.util.spec_from_file_location(
        name, REPO / name / "__init__.py", submodule_search_locations=[str(REPO / name)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


for _name in TODAYS:
    if Path(getattr(sys.modules.get(_name), "__file__", "") or "").parent != REPO / _name:
        from_todays_tree(_name)

from persample_bench.runformat import Point, baseline_of  # noqa: E402, F401 (today's tree, loaded above; baseline_of for per_sample_grads)

# The commit's persample_core may predate any name today's harness needs; then
# every point skips with the reason instead of the whole suite failing to import.
try:
    from persample_bench.grid import current_sweep, in_sweep
    from persample_bench.memory import WouldNotFit, peak_bytes  # noqa: F401 (peak_bytes: for per_sample_grads.py)
    from persample_bench.precision import Precision, statistic  # noqa: F401 (for per_sample_grads.py)
    from persample_bench.prepare import prepare_point
    from persample_bench.timing import clock as clock_of
    from persample_bench.timing import measure  # noqa: F401 (for per_sample_grads.py)
    from persample_core import MethodUnavailable
except ImportError as err:
    MISSING: ImportError | None = err
else:
    MISSING = None
AXES_SCRIPT = "import json; from persample_bench.grid import axes; print(json.dumps(axes()))"


def todays_axes() -> dict[str, list]:
    """The grid's axes as the source tree beside this suite defines them, whatever commit is installed.

    asv discovers params once, at the newest commit, then re-imports this suite
    for every run, with the commit under test installed, and passes it a
    parameter combination by index. Params read from the installed package
    would shift those indices in any commit that has fewer methods or
    workloads, and results would be stored under the wrong names. So the
    params are today's ``persample_bench.grid.axes()``, computed in a child
    process started in the source tree, and cached under ``.asv/`` keyed by
    the source, the sweep and ``PERSAMPLE_WORKLOADS``, so that not every benchmark process pays for it (after
    installing a package that registers workloads, remove ``.asv/axes-*.json`` to see them).
    """
    source = b"".join(
        path.read_bytes()
        for package in ("persample_core", "persample_bench")
        for path in sorted((REPO / package).glob("*.py"))
    )
    chosen = os.environ.get("PERSAMPLE_SWEEP", "") + "|" + os.environ.get("PERSAMPLE_WORKLOADS", "")
    key = hashlib.sha256(chosen.encode() + source).hexdigest()[:16]
    cache = REPO / ".asv" / f"axes-{key}.json"
    if not cache.exists():
        child = subprocess.run([sys.executable, "-c", AXES_SCRIPT], cwd=REPO, capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"reading the grid from {REPO / 'persample_core'} failed:\n{child.stderr}")
        cache.parent.mkdir(exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(child.stdout)
        partial.replace(cache)
    return json.loads(cache.read_text())


AXES = todays_axes()


@functools.lru_cache(maxsize=2)
def prepared(point):
    """``prepare_point``, once per process for a point and its baseline.

    asv re-runs ``setup`` before every timing sample (asv#966); a point's
    calls leave no state behind, so building and checking it again would only
    cost time.
    """
    return prepare_point(point)


def knows(workload: str) -> bool:
    """Whether this commit's persample_core can build ``workload``: a built-in of it, or any spec where it resolves
    specs (``persample_core.workloads.resolve``); a point of one it cannot build is skipped, not failed."""
    import persample_core
    from persample_core import workloads

    return workload in persample_core.WORKLOADS or hasattr(workloads, "resolve")


def require():
    """Skip, saying why, where the installed persample_core lacks a name imported above."""
    if MISSING is not None:
        raise SkipNotImplemented(f"this commit's persample_core lacks what the suite needs: {MISSING}")


class PointBenchmark:
    """One point of the grid per parameter combination; ``setup`` prepares it as ``self.prepared``."""

    param_names = list(AXES)
    params = list(AXES.values())

    @staticmethod
    def narrowed(**kept):
        """Today's axes, those named cut to the values in ``kept[name]``: params for a narrower class."""
        return [[value for value in values if value in kept.get(name, values)] for name, values in AXES.items()]

    def setup(self, workload, method, batch_size, device):
        self.prepared = self.prepare(workload, method, batch_size, device)

    @staticmethod
    def clock(device):
        """The clock a call on ``device`` is timed with: CPU time where that measures the call (one torch
        thread, on the CPU), else elapsed time, by the harness's rule (persample_bench/timing.py).

        On a machine shared with other jobs, elapsed time also counts the spells
        when the benchmark was not running; docs/studies/2026-12-02-asv-noise.md
        measures what that does to these benchmarks.
        """
        return clock_of("cpu" if torch.get_num_threads() == 1 else "wall", device)

    @staticmethod
    def prepare(workload, method, batch_size, device):
        require()
        point = Point(workload, method, batch_size, device)
        if device == "cuda" and not torch.cuda.is_available():
            raise SkipNotImplemented("CUDA is not available on this machine")
        if not in_sweep(point):
            raise SkipNotImplemented(f"{point.id} is not in this commit's {current_sweep()!r} sweep")
        try:
            return prepared(point)
        except MethodUnavailable as err:
            raise SkipNotImplemented(f"{point.id}: {err}") from err
        except ValueError as err:
            if isinstance(err, WouldNotFit) or not knows(point.workload):
                raise SkipNotImplemented(f"{point.id}: {err}") from err
            raise
        except (ImportError, AttributeError) as err:
            raise SkipNotImplemented(f"this commit's persample_core lacks what {point.id} needs: {err}") from err
        except (RuntimeError, MemoryError) as err:
            from persample_core import is_out_of_memory  # here: an older core lacks it, and only this point then fails

            if is_out_of_memory(err):
                raise SkipNotImplemented(f"{point.id} runs out of memory: {err}") from err
            raise
