"""The sweep, defined once: workloads x methods x batch sizes x devices, and how precisely each point is timed.

Both harnesses read it: the pytest-benchmark suite parametrizes over
``points()``, the asv suite takes ``axes()`` as its params and skips what
``in_sweep`` rejects. A new method in ``METHODS`` or a new workload is swept
with no change here unless it needs its own batch sizes.

The sweep is chosen by ``--persample-sweep`` or ``PERSAMPLE_SWEEP`` (asv), so one switch
serves both harnesses:

- ``mission`` (the default): the tutorial's question, the loop against vmap
  (and the floor) on its CNN across batch sizes, and at B = 1 and 64 on the
  two other workloads (every workload has the first batch size, which asv's
  dashboard opens on);
- ``quick``: every method, at more batch sizes of the other workloads;
- ``full``: every method up to batches where the B x P per-sample gradients
  (1.2M parameters for simple_cnn) fill a GPU's memory, timed more precisely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from persample_bench.precision import Precision
from persample_bench.runformat import Point
from persample_core.methods import BASELINE, METHODS
from persample_core.validate import check_choice
from persample_core.workloads import DEFAULT_WORKLOAD

DEVICES = ("cpu", "cuda")
DEFAULT_SWEEP = "mission"


@dataclass(frozen=True)
class Sweep:
    """Batch sizes per workload, the methods (None: every one in ``METHODS``), and the precision of the points
    interleaved with the baseline (``gated``: the speedup the gate tests) and of the others (``plain``)."""

    batch_sizes: dict
    methods: tuple | None
    gated: Precision
    plain: Precision


# Precision: the 95% interval of a point's median within +-target, or the time cap. One round of a point varies
# by 5-15% on a shared 2-core CPU, so the big batches reach these only in the full sweep's time; the speedup points
# get the most time, since the gate tests their speedup (docs/studies/2026-12-02-adaptive-rounds.md).
SWEEPS = {
    "mission": Sweep(
        {DEFAULT_WORKLOAD: (1, 8, 32, 64, 128), "mlp": (1, 64), "tiny_transformer": (1, 64)},
        (BASELINE, "vmap"),
        gated=Precision(0.03, max_time=6.0),
        plain=Precision(0.05, max_time=2.0),
    ),
    "quick": Sweep(
        {DEFAULT_WORKLOAD: (1, 8, 32, 64, 128, 256), "mlp": (1, 64, 256), "tiny_transformer": (1, 64, 256)},
        None,
        gated=Precision(0.03, max_time=6.0),
        plain=Precision(0.05, max_time=2.0),
    ),
    "full": Sweep(
        {
            DEFAULT_WORKLOAD: (1, 8, 32, 64, 128, 256, 512, 1024),
            "mlp": (1, 8, 64, 256, 1024),
            "tiny_transformer": (1, 8, 64, 256, 1024),
        },
        None,
        gated=Precision(0.02, max_time=20.0),
        plain=Precision(0.03, max_time=5.0),
    ),
}


def current_sweep() -> str:
    sweep = os.environ.get("PERSAMPLE_SWEEP", DEFAULT_SWEEP)
    check_choice("sweep (PERSAMPLE_SWEEP)", sweep, SWEEPS)
    return sweep


def sweep_methods(sweep: str | None = None) -> list[str]:
    """The methods ``sweep`` times, in registry order."""
    chosen = SWEEPS[sweep or current_sweep()].methods
    return [name for name in METHODS if chosen is None or name in chosen]


def check_methods(names) -> list[str]:
    """``names`` as a method list, refused by name unless each is in ``METHODS``; the baseline is added, since
    every speedup is taken over it."""
    for name in names:
        check_choice("method", name, METHODS)
    return [name for name in METHODS if name in names or name == BASELINE]


def axes(sweep: str | None = None) -> dict[str, list]:
    """Every value each axis takes in ``sweep``: asv's ``params``, in the order of ``Point``'s fields."""
    sizes = SWEEPS[sweep or current_sweep()].batch_sizes
    return {
        "workload": sorted(sizes),
        "method": list(METHODS),
        "batch_size": sorted({b for per_workload in sizes.values() for b in per_workload}),
        "device": list(DEVICES),
    }


def check_device(text: str) -> str:
    """``text`` as a device the points can be timed on (``cpu``, ``cuda``, ``cuda:N``), or a ValueError in one line
    saying what this machine has."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICES or (device.type == "cpu" and device.index):
        raise ValueError(f"{text!r} is not a device to time on; choose cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{text}: CUDA is not available here (torch {torch.__version__}); time on the cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"{text}: this machine shows {torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1} (CUDA_VISIBLE_DEVICES chooses which)"
            )
    return text


def in_sweep(point: Point, sweep: str | None = None) -> bool:
    sizes = SWEEPS[sweep or current_sweep()].batch_sizes
    return (
        point.method in sweep_methods(sweep)
        and point.device.split(":")[0] in DEVICES
        and point.batch_size in sizes.get(point.workload, ())
    )


def points(sweep: str | None = None, *, methods=None, devices=DEVICES, floor: str | None = None) -> list[Point]:
    """The points of ``sweep`` (its methods, or ``methods``, and the ``floor`` where named), workload by workload,
    smallest batch first."""
    sizes = SWEEPS[sweep or current_sweep()].batch_sizes
    timed = [*(methods or sweep_methods(sweep)), *([floor] if floor else [])]
    return [
        Point(workload, method, batch_size, device)
        for workload in sizes
        for device in devices
        for batch_size in sizes[workload]
        for method in timed
    ]
