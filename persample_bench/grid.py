"""The sweep, defined once: workloads x methods x batch sizes x devices.

Both harnesses read it: the pytest-benchmark suite parametrizes over
``points()``, the asv suite takes ``AXES`` as its params and skips what
``in_sweep`` rejects. A new method in ``METHODS`` or a new workload is swept
with no change here unless it needs its own batch sizes.

The sweep is chosen by ``PERSAMPLE_SWEEP`` (``quick``, the default, or
``full``), so one switch serves both harnesses.
"""

from __future__ import annotations

import os

from persample_core.methods import METHODS
from persample_core.validate import check_choice
from persample_core.workloads import DEFAULT_WORKLOAD
from persample_gate.runs import Point

DEVICES = ("cpu", "cuda")

# Batch sizes per sweep and workload. The quick sweep took 7-9 min on a
# 2-core CPU with one torch thread, six methods and the floor (2.5 min more
# compiling vmap_compiled with inductor's cache cold); the full one goes to
# batches where per-sample gradient memory (B x P floats; 1.2M parameters for
# simple_cnn) starts to matter on a GPU.
BATCH_SIZES = {
    "quick": {
        DEFAULT_WORKLOAD: (1, 8, 32, 64, 128, 256),
        "mlp": (1, 64, 256),
        "tiny_transformer": (1, 64, 256),
    },
    "full": {
        DEFAULT_WORKLOAD: (1, 8, 32, 64, 128, 256, 512, 1024),
        "mlp": (1, 8, 64, 256, 1024),
        "tiny_transformer": (1, 8, 64, 256, 1024),
    },
}
SWEEPS = tuple(BATCH_SIZES)
# (min rounds, max seconds) of timing per point, as pytest-benchmark's
# --benchmark-min-rounds and --benchmark-max-time: the full sweep takes more,
# which is what lets the gate resolve smaller slowdowns.
ROUNDS = {"quick": (5, 1.0), "full": (15, 3.0)}
# The same for the interleaved points, whose ratio to the loop the gate tests:
# more rounds, because the gate's power comes from them. On this project's
# 2-core machine one round's ratio varies by about 10% (log standard
# deviation); going from 4 to 10 s took a run's ratio from 2.4-5.7% to
# 1.8-3.6% between processes, and the share of 10% slowdowns the gate
# catches from 20% to 58% of point pairs (84-98% on the four points'
# geometric mean; README, "How small a slowdown it catches"), for about a
# minute more of the quick sweep.
GATED_ROUNDS = {"quick": (20, 10.0), "full": (30, 15.0)}


def current_sweep() -> str:
    sweep = os.environ.get("PERSAMPLE_SWEEP", "quick")
    check_choice("sweep (PERSAMPLE_SWEEP)", sweep, BATCH_SIZES)
    return sweep


def axes(sweep: str | None = None) -> dict[str, list]:
    """Every value each axis takes in ``sweep``: asv's ``params``, in the order of ``Point``'s fields."""
    sizes = BATCH_SIZES[sweep or current_sweep()]
    return {
        "workload": sorted(sizes),
        "method": list(METHODS),
        "batch_size": sorted({b for per_workload in sizes.values() for b in per_workload}),
        "device": list(DEVICES),
    }


def in_sweep(point: Point, sweep: str | None = None) -> bool:
    sizes = BATCH_SIZES[sweep or current_sweep()]
    return point.method in METHODS and point.device in DEVICES and point.batch_size in sizes.get(point.workload, ())


def points(sweep: str | None = None, *, methods=None, devices=DEVICES) -> list[Point]:
    """The points of ``sweep``, workload by workload, smallest batch first."""
    sizes = BATCH_SIZES[sweep or current_sweep()]
    return [
        Point(workload, method, batch_size, device)
        for workload in sizes
        for device in devices
        for batch_size in sizes[workload]
        for method in (methods or METHODS)
    ]
