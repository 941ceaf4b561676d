"""The sweep, defined once: workloads x methods x batch sizes x devices x dtypes, and how precisely each point is timed.

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
- ``quick``: every method, at more batch sizes of the other workloads, and the
  DP-standard ones (ResNet-18 with GroupNorm, a character LSTM) at the batch
  sizes a 2-core CPU times in minutes;
- ``full``: every method up to batches where the B x P per-sample gradients
  (1.2M parameters for simple_cnn, 11.2M for resnet18_gn) fill a GPU's memory,
  timed more precisely;
- ``dp``: the DP-SGD step (``persample_core.dp``: each sample's norm and the
  clipped sum) by each DP method, points ``dp_<method>``, every one timed in
  rounds interleaved with the non-private step (one batched forward and
  backward), its baseline: the summary gives each as a multiple of it, and the
  gate tests that multiple. No floor: the non-private step is the floor's cousin.

The workloads a package registers (``persample_core.workloads``) join the
quick and full sweeps at their own batch sizes. Naming workloads
(``--persample-workload``, or ``PERSAMPLE_WORKLOADS`` for asv, comma-separated)
times those alone: a workload of the sweep at its batch sizes there, any other
at its own (``persample_core.workloads.batch_sizes``); ``--persample-batch-sizes``
overrides the batch sizes of all. Points are float32 unless ``--persample-dtype``
names more dtypes; float16 is timed on CUDA only (the CPU's half kernels are not
what anyone trains with).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from persample_bench.precision import Precision
from persample_bench.runformat import DEFAULT_DTYPE, DP_PREFIX, DTYPES, FLOOR, NONPRIVATE, Point, is_dp
from persample_core.methods import BASELINE, METHODS
from persample_core.validate import check_choice
from persample_core.workloads import DEFAULT_WORKLOAD

DEVICES = ("cpu", "cuda")
DEFAULT_SWEEP = "mission"


@dataclass(frozen=True)
class Sweep:
    """Batch sizes per workload, the methods (None: every one of ``names``), and the precision of the points
    interleaved with the baseline (``gated``: the speedup the gate tests) and of the others (``plain``). ``step``:
    what its points compute, ``per_sample`` gradients (over the loop, with the floor) or the ``dp`` step (over the
    non-private one)."""

    batch_sizes: dict
    methods: tuple | None
    gated: Precision
    plain: Precision
    step: str = "per_sample"

    @property
    def baseline(self) -> str:
        return NONPRIVATE if self.step == "dp" else BASELINE

    @property
    def floor(self) -> str | None:
        return None if self.step == "dp" else FLOOR

    @property
    def names(self) -> list[str]:
        """Every method a point of this sweep may name, the baseline first."""
        if self.step == "dp":
            try:  # here: asv times commits whose persample_core predates the DP step, whose points then skip
                from persample_core.dp import DP_METHODS
            except ImportError:
                return [NONPRIVATE]
            return [NONPRIVATE, *(DP_PREFIX + name for name in DP_METHODS)]
        return list(METHODS)


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
        {
            DEFAULT_WORKLOAD: (1, 8, 32, 64, 128, 256),
            "mlp": (1, 64, 256),
            "tiny_transformer": (1, 64, 256),
            "resnet18_gn": (1, 8),
            "char_lstm": (1, 8, 64),
        },
        None,
        gated=Precision(0.03, max_time=6.0),
        plain=Precision(0.05, max_time=2.0),
    ),
    "full": Sweep(
        {
            DEFAULT_WORKLOAD: (1, 8, 32, 64, 128, 256, 512, 1024),
            "mlp": (1, 8, 64, 256, 1024),
            "tiny_transformer": (1, 8, 64, 256, 1024),
            "resnet18_gn": (1, 8, 32, 64, 128),
            "char_lstm": (1, 8, 64, 256, 1024),
        },
        None,
        gated=Precision(0.02, max_time=20.0),
        plain=Precision(0.03, max_time=5.0),
    ),
    # Every DP method but vmap_chunked and vmap_compiled, timed where named: vmap's cost in chunks, and minutes of
    # compiling here.
    "dp": Sweep(
        {
            DEFAULT_WORKLOAD: (8, 64),
            "mlp": (64, 256),
            "tiny_transformer": (64,),
            "resnet18_gn": (8,),
            "char_lstm": (8, 64),
        },
        (
            NONPRIVATE,
            *(DP_PREFIX + name for name in ("loop", "vmap", "expanded_weights", "opacus", "backpack", "ghost")),
        ),
        gated=Precision(0.03, max_time=3.0),
        plain=Precision(0.05, max_time=2.0),
        step="dp",
    ),
}


def current_sweep() -> str:
    sweep = os.environ.get("PERSAMPLE_SWEEP", DEFAULT_SWEEP)
    check_choice("sweep (PERSAMPLE_SWEEP)", sweep, SWEEPS)
    return sweep


def current_workloads() -> tuple:
    """The workloads ``PERSAMPLE_WORKLOADS`` names (comma-separated specs), for asv, which takes no options; none:
    the sweep's."""
    return tuple(name.strip() for name in os.environ.get("PERSAMPLE_WORKLOADS", "").split(",") if name.strip())


def _own_sizes(names, sweep: str) -> dict:
    """``{workload: its own batch sizes}`` of ``names``, or of the registered workloads beyond the mission sweep
    where ``names`` is None; none where the installed persample_core predates registered workloads (asv times old
    commits, whose points of them are skipped)."""
    try:
        from persample_core.workloads import batch_sizes, registered
    except ImportError:
        return {}
    if names is None:
        names = sorted(registered()) if sweep != DEFAULT_SWEEP else []
    return {name: batch_sizes(name) for name in names}


def sizes(sweep: str | None = None, *, workloads=(), batch_sizes=()) -> dict[str, tuple]:
    """``{workload: batch sizes}`` a run times: ``sweep``'s (the registered workloads in quick and full), or the
    named ``workloads`` alone (else ``PERSAMPLE_WORKLOADS``'s), each at ``batch_sizes`` where given."""
    sweep = sweep or current_sweep()
    workloads = tuple(dict.fromkeys(workloads or current_workloads()))
    swept = SWEEPS[sweep].batch_sizes
    if workloads:
        own = _own_sizes([name for name in workloads if name not in swept], sweep)
        chosen = {name: swept.get(name) or own.get(name) for name in workloads}
        chosen = {name: found for name, found in chosen.items() if found}
    else:
        chosen = {**swept, **_own_sizes(None, sweep)}
    return {name: tuple(batch_sizes) or found for name, found in chosen.items()}


def sweep_methods(sweep: str | None = None) -> list[str]:
    """The methods ``sweep`` times, in registry order."""
    chosen = SWEEPS[sweep or current_sweep()]
    return [name for name in chosen.names if chosen.methods is None or name in chosen.methods]


def check_methods(names, sweep: str | None = None) -> list[str]:
    """``names`` as the methods of ``sweep``'s points, refused by name unless each is one (in the dp sweep a DP
    method's name, ``ghost``, or its point's, ``dp_ghost``); the sweep's baseline is added, since every speedup is
    taken over it."""
    from persample_core.dp import DP_METHODS

    chosen = SWEEPS[sweep or current_sweep()]
    if chosen.step == "dp":
        names = [name if name in chosen.names else DP_PREFIX + name for name in names]
    for name in names:
        if chosen.step != "dp" and (is_dp(name) or name in DP_METHODS.keys() - METHODS.keys()):
            raise ValueError(f"{name} is a method of the DP step; time it in the dp sweep (persample bench --sweep dp)")
        check_choice("method", name, chosen.names)
    return [name for name in chosen.names if name in names or name == chosen.baseline]


def axes(sweep: str | None = None) -> dict[str, list]:
    """Every value each axis takes in ``sweep``: asv's ``params``, in the order of ``Point``'s fields (asv times
    float32: its points have no dtype axis)."""
    chosen = sizes(sweep)
    return {
        "workload": sorted(chosen),
        "method": SWEEPS[sweep or current_sweep()].names,
        "batch_size": sorted({b for per_workload in chosen.values() for b in per_workload}),
        "device": list(DEVICES),
    }


def check_dtypes(names) -> list[str]:
    """``names`` as the dtype axis, refused by name unless each is in ``DTYPES``; float32 where none is named."""
    for name in names:
        check_choice("dtype", name, DTYPES)
    return list(dict.fromkeys(names)) or [DEFAULT_DTYPE]


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
    return (
        point.method in sweep_methods(sweep)
        and point.device.split(":")[0] in DEVICES
        and point.batch_size in sizes(sweep).get(point.workload, ())
    )


def points(
    sweep: str | None = None,
    *,
    methods=None,
    devices=DEVICES,
    floor: str | None = None,
    workloads=(),
    batch_sizes=(),
    dtypes=(DEFAULT_DTYPE,),
) -> list[Point]:
    """The points of ``sweep`` (its methods, or ``methods``, and the ``floor`` where named; its workloads, or
    ``workloads``, at ``batch_sizes`` where given: ``sizes``), in each of ``dtypes`` (float16 on CUDA only),
    workload by workload, smallest batch first."""
    chosen = sizes(sweep, workloads=workloads, batch_sizes=batch_sizes)
    timed = [*(methods or sweep_methods(sweep)), *([floor] if floor else [])]
    return [
        Point(workload, method, batch_size, device, dtype)
        for workload in chosen
        for device in devices
        for dtype in dtypes
        if not (dtype == "float16" and device == "cpu")
        for batch_size in chosen[workload]
        for method in timed
    ]
