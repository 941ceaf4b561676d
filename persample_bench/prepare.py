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
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from persample_bench.hardware import fix_numerics
from persample_bench.memory import KEPT_HEAP, apply_heap_policy, check_fits
from persample_bench.runformat import DEFAULT_DTYPE, DP_PREFIX, FLOOR, NONPRIVATE, Point
from persample_bench.timing import floor, nonprivate, synchronized, trainable_numel
from persample_core import METHODS, assert_matches_reference, compile_seconds, make_workload, prepare

CHECK_BATCH_SIZE = 4
CHECK_SEED = 12345
TIMED_MAX_NORM = 1.0  # a DP point's clipping norm: what the clipping costs does not depend on it


def torch_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` as ``torch.bfloat16``: a point's dtype (``runformat.DTYPES``)."""
    return getattr(torch, name)


@functools.cache
def check_method(workload: str, method: str, device: str, dtype: str = DEFAULT_DTYPE):
    """Raise ReferenceMismatch (or MethodUnavailable) unless ``method`` is right here, within the tolerance of
    ``dtype`` (``persample_core.tolerance.TOLERANCES``); cached. A point of the DP step is checked as one
    (``persample_core.dp``: DPMismatch), its workload's loss first held to taking the mean over the batch."""
    made = _check_batch(workload, device, dtype)
    if method == NONPRIVATE:
        return assert_nonprivate_matches_reference(*made, _dp_expected(workload, device, dtype))
    if method.startswith(DP_PREFIX):
        # Imported where a DP point needs it: asv times commits whose persample_core predates it.
        from persample_core.dp import assert_dp_matches_reference

        expected = _dp_expected(workload, device, dtype)
        return assert_dp_matches_reference(*made, method.removeprefix(DP_PREFIX), expected=expected)
    return assert_matches_reference(*made, method)


class NonprivateMismatch(AssertionError):
    """The non-private step's gradient is not the mean of the float64 loop's per-sample gradients."""


def assert_nonprivate_matches_reference(model, loss_fn, inputs, targets, expected) -> float:
    """The non-private step's gradient against the mean of the float64 loop's per-sample gradients (``expected``,
    ``dp.expect_dp`` of the batch), on the batch less its samples at a kink, relative to the sum of the terms'
    sizes (``guard.sum_error``: per-sample gradients cancel); its worst error, or ``NonprivateMismatch``. A layer
    that couples the samples (BatchNorm in training) would tell the two apart."""
    # Imported here, as persample_core.dp is: asv times commits whose persample_core predates these modules.
    from persample_core.guard import sum_error
    from persample_core.tolerance import TOLERANCES, precision

    kept = [i for i in range(len(inputs)) if i not in set(expected.unstable)] or list(range(len(inputs)))
    got = nonprivate(model, loss_fn)(inputs[kept], targets[kept])
    some = next(iter(got.values()))
    prec = precision(some.dtype, some.device)
    errors = {
        name: sum_error(expected.grads[name][kept], got[name].detach().cpu().double() * len(kept)) for name in got
    }
    name, worst = max(errors.items(), key=lambda item: math.inf if math.isnan(item[1]) else item[1])
    if not worst <= TOLERANCES[prec]:
        raise NonprivateMismatch(
            f"the non-private step's gradient ({prec}) is off the float64 loop's mean by {worst:.2e} at {name!r}, "
            f"beyond tolerance {TOLERANCES[prec]:.0e}: a layer that couples the samples (BatchNorm in training?)"
        )
    return worst


def _check_batch(workload: str, device: str, dtype: str):
    return make_workload(
        workload, batch_size=CHECK_BATCH_SIZE, device=device, dtype=torch_dtype(dtype), seed=CHECK_SEED
    )


@functools.cache
def _dp_expected(workload: str, device: str, dtype: str):
    """The float64 reference every DP point of a workload is checked against (``dp.expect_dp``), once its loss is
    held to taking the mean over the batch; cached: three float64 loops, minutes' worth over a sweep's methods."""
    from persample_core.dp import check_mean_loss, expect_dp

    made = _check_batch(workload, device, dtype)
    check_mean_loss(*made)
    return expect_dp(*made)


def holds_gradients(method: str) -> bool:
    """Whether a point of ``method`` holds the B x P per-sample gradients: all but the non-private step and the DP
    methods that never materialise them (ghost clipping)."""
    return method.removeprefix(DP_PREFIX) in (*METHODS, FLOOR)


def timed_compute(point: Point, model, loss_fn):
    """What a point times, ``compute(inputs, targets)``: its method prepared, the floor, the non-private step, or a
    DP method's step at ``TIMED_MAX_NORM``."""
    if point.method == FLOOR:
        return floor(model, loss_fn)
    if point.method == NONPRIVATE:
        return nonprivate(model, loss_fn)
    if point.method.startswith(DP_PREFIX):
        from persample_core.dp import prepare_dp  # where needed, as in check_method

        step = prepare_dp(model, loss_fn, method=point.method.removeprefix(DP_PREFIX))

        def compute(inputs, targets):
            return step(inputs, targets, TIMED_MAX_NORM)

        compute.__wrapped__ = step  # what it reports of itself (compile_seconds) is the step's
        return compute
    return prepare(model, loss_fn, method=point.method)


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
    """Check, build and warm up ``point``; ``point.method`` may be ``FLOOR``, ``NONPRIVATE`` or a DP point's.

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
    if holds_gradients(point.method):
        check_fits(point, gradient_bytes(point, trainable_numel(model)))
    if point.method != FLOOR:
        check_method(point.workload, point.method, point.device, point.dtype)
    compute = timed_compute(point, model, loss_fn)
    run = synchronized(functools.partial(compute, inputs, targets), point.device)
    if progress and warmup and compile_seconds(compute) is not None:
        progress(f"compiling {point.id} in its warm-up (kept out of the timings; minutes with a cold cache)")
    for _ in range(warmup):
        run()
    return Prepared(point, run, trainable_numel(model), compute)
