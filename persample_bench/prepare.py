"""What both benchmark suites do at a point before timing it.

Correctness comes first: a method is checked against the float64 reference on
fresh random inputs (its own seed, not the timed batch) once per workload,
method and device, before any of its points is timed. Then the point is built,
its callable made to synchronise on CUDA, and warmed up, under the run's heap
policy (``memory.apply_heap_policy``) and the numerics the suite fixes
(``hardware.fix_numerics``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from persample_bench.hardware import fix_numerics
from persample_bench.memory import KEPT_HEAP, apply_heap_policy, check_fits
from persample_bench.runformat import DEFAULT_DTYPE, FLOOR, Point
from persample_bench.timing import floor, synchronized, trainable_numel
from persample_core import assert_matches_reference, compile_seconds, make_workload, prepare

CHECK_BATCH_SIZE = 4
CHECK_SEED = 12345


def torch_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` as ``torch.bfloat16``: a point's dtype (``runformat.DTYPES``)."""
    return getattr(torch, name)


@functools.cache
def check_method(workload: str, method: str, device: str, dtype: str = DEFAULT_DTYPE):
    """Raise ReferenceMismatch (or MethodUnavailable) unless ``method`` is right here, within the tolerance of
    ``dtype`` (``persample_core.tolerance.TOLERANCES``); cached."""
    made = make_workload(
        workload, batch_size=CHECK_BATCH_SIZE, device=device, dtype=torch_dtype(dtype), seed=CHECK_SEED
    )
    return assert_matches_reference(*made, method)


@dataclass
class Prepared:
    """A point ready to time: ``run()`` computes it once, synchronised."""

    point: Point
    run: Callable[[], object]
    n_params: int
    compute: Callable  # the prepared method, for what it reports about itself (compile time)

    @property
    def compile_seconds(self) -> float | None:
        """Time spent compiling (in warm-up, not in ``run``); None for a method that does not compile."""
        return compile_seconds(self.compute)

    @property
    def gradient_bytes(self) -> int:
        """The least memory any method needs: B x P per-sample gradients in the point's dtype."""
        return gradient_bytes(self.point, self.n_params)


def gradient_bytes(point: Point, n_params: int) -> int:
    return point.batch_size * n_params * torch.empty((), dtype=torch_dtype(point.dtype)).element_size()


def prepare_point(point: Point, *, seed: int = 0, warmup: int = 1, heap: str = KEPT_HEAP, progress=None) -> Prepared:
    """Check, build and warm up ``point``; ``point.method`` may be ``FLOOR``.

    ``heap``: the allocator policy the point is timed under (``memory.HEAP_POLICIES``).
    ``progress``: called with a line before a warm-up that compiles.
    Raises MethodUnavailable for a method that cannot run here, ``memory.WouldNotFit`` for a batch whose B x P
    gradients alone exceed the device's free memory (before any method runs), and lets an out-of-memory error
    through for the suite to turn into a skip.
    """
    apply_heap_policy(heap)
    fix_numerics()
    model, loss_fn, inputs, targets = make_workload(
        point.workload, batch_size=point.batch_size, device=point.device, dtype=torch_dtype(point.dtype), seed=seed
    )
    check_fits(point, gradient_bytes(point, trainable_numel(model)))
    if point.method != FLOOR:
        check_method(point.workload, point.method, point.device, point.dtype)
    if point.method == FLOOR:
        compute = floor(model, loss_fn)
    else:
        compute = prepare(model, loss_fn, method=point.method)
    run = synchronized(functools.partial(compute, inputs, targets), point.device)
    if progress and warmup and compile_seconds(compute) is not None:
        progress(f"compiling {point.id} in its warm-up (kept out of the timings; minutes with a cold cache)")
    for _ in range(warmup):
        run()
    return Prepared(point, run, trainable_numel(model), compute)
