"""Correctness: every method against a float64 reference computed on the CPU.

The reference is the loop method on float64 copies of the model and data, so
it shares no code path with the batched methods and carries ~1e-16 rounding.
The error of a parameter is the largest absolute difference divided by the
largest absolute reference value of that parameter: a relative error at the
gradient's own scale, which stays meaningful where single entries are ~0.
Samples that sit on a kink of ReLU or max-pool are found from the reference
alone and left out of the float32 comparison (see ``unstable_samples``).

In bfloat16 and float16 (``LOW_PRECISION``) rounding crosses kinks in most
samples of a ReLU network, and the gradients themselves are far from the
float64 ones (simple_cnn: 12% in norm; ResNet-18-GN: 31%, in bfloat16 on a
CPU), so no per-sample bound both holds and means anything. There a method is
held to two things (``compare_low_precision``): its code is right (the float32
comparison above, on a float32 copy), and in the low precision it loses little
more than the tutorial's loop does in that precision: each parameter's error in
norm over the batch, against float64, beyond ``LOW_PRECISION_MARGIN`` times the
loop's own error for that parameter, is within the precision's tolerance.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import torch

from persample_core.methods import per_sample_grads
from persample_core.tolerance import TOLERANCES, precision


@dataclass(frozen=True)
class Comparison:
    """How one method's gradients compare with the reference, parameter by parameter."""

    method: str
    precision: str
    tolerance: float
    errors: dict  # parameter name -> relative error over the stable samples
    unstable: tuple = ()  # samples at a kink, left out of ``errors``

    @property
    def worst(self) -> tuple[str, float]:
        return max(self.errors.items(), key=lambda item: item[1])

    @property
    def ok(self) -> bool:
        return self.worst[1] <= self.tolerance

    def __str__(self):
        name, error = self.worst
        verdict = "within" if self.ok else "EXCEEDS"
        kinks = f" ({len(self.unstable)} sample(s) at a kink left out: {list(self.unstable)})" if self.unstable else ""
        return (
            f"method {self.method!r} ({self.precision}): worst parameter {name!r} has relative error "
            f"{error:.2e}, {verdict} tolerance {self.tolerance:.0e}{kinks}"
        )


class ReferenceMismatch(AssertionError):
    """A method's gradients differ from the float64 reference beyond the tolerance."""


# The random weight perturbation that finds samples at a kink, as a fraction of
# the tolerance. A smooth gradient moves by a multiple of it that grows with
# depth (simple_cnn ~2.6x, ResNet-18-GN ~10x), one at a kink jumps by ~1e-2. At
# a tenth of the tolerance ResNet-18-GN's 11M weights crossed a kink in every
# sample, which left the float32 check nothing to judge; at a hundredth the
# smooth movement stays 10x below the tolerance (tests/test_correctness.py's
# test_dp_standard_workloads_match_float64 holds that samples are judged).
JITTER_PER_TOLERANCE = 0.01


def reference_grads(model, loss_fn, inputs, targets, *, jitter: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-sample gradients by the loop method on float64 CPU copies of everything.

    With ``jitter``, every trainable weight is first moved by a random
    ``jitter`` fraction of its own size (``seed`` picks the direction).
    """
    model64 = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    if jitter:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model64.parameters():
                p.mul_(1 + jitter * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    inputs64 = inputs.cpu().to(torch.float64) if inputs.is_floating_point() else inputs.cpu()
    return per_sample_grads(model64, loss_fn, inputs64, targets.cpu(), method="loop")


def _sample_errors(value, ref, scale) -> torch.Tensor:
    """Each sample's largest absolute difference, at the parameter's own scale."""
    diff = (value.detach().cpu().to(torch.float64) - ref).abs().reshape(ref.shape[0], -1).amax(dim=1)
    return diff / scale if scale > 0 else diff


def unstable_samples(model, loss_fn, inputs, targets, reference, tolerance: float) -> tuple:
    """Samples whose reference gradient jumps when the weights move a little.

    ReLU and max-pool make the gradient piecewise: where two values are within
    float32 rounding of each other (a max-pool window's top two, a ReLU input
    near 0), a float32 computation may pick the other side of the kink and get
    a different, equally valid gradient. Such a sample cannot be judged at
    float32 precision. It is found from the reference alone (weights moved both
    ways by a random fraction ``JITTER_PER_TOLERANCE * tolerance`` of their size),
    never from the method under test, so a wrong method cannot hide behind it.
    """
    if tolerance < 1e-6:  # float64: kinks closer than rounding are astronomically rare
        return ()
    flagged = torch.zeros(inputs.shape[0], dtype=torch.bool)
    for sign in (1, -1):
        moved = reference_grads(model, loss_fn, inputs, targets, jitter=sign * JITTER_PER_TOLERANCE * tolerance)
        for name, ref in reference.items():
            flagged |= _sample_errors(moved[name], ref, ref.abs().max().item()) > tolerance
    return tuple(flagged.nonzero().flatten().tolist())


class Expected(NamedTuple):
    """What a method's gradients are judged against (``expect``)."""

    grads: dict  # parameter name -> the float64 reference, B x shape
    unstable: tuple  # samples at a kink at the method's precision


def expect(model, loss_fn, inputs, targets, prec: str) -> Expected:
    """The float64 reference of ``model`` on this batch, and its samples at a kink at precision ``prec``."""
    want = reference_grads(model, loss_fn, inputs, targets)
    return Expected(want, unstable_samples(model, loss_fn, inputs, targets, want, TOLERANCES[prec]))


def gradient_precision(got: dict) -> str:
    """The precision that gradients ``got`` (``{name: tensor}``) were computed in."""
    some = next(iter(got.values()))
    return precision(some.dtype, some.device)


def compare_with_reference(
    model, loss_fn, inputs, targets, method: str, *, tolerance: float | None = None
) -> Comparison:
    """Run ``method`` and measure its error against the float64 reference (see ``compare``; in bfloat16 and float16,
    ``compare_low_precision``)."""
    got = per_sample_grads(model, loss_fn, inputs, targets, method=method)
    if gradient_precision(got) in LOW_PRECISION and tolerance is None:
        return compare_low_precision(model, loss_fn, inputs, targets, method, got)
    return compare(method, got, expect(model, loss_fn, inputs, targets, gradient_precision(got)), tolerance=tolerance)


LOW_PRECISION = ("bfloat16", "float16")
# A method may lose a quarter more than the loop loses in the same precision: the methods lost as much as the loop
# (ResNet-18-GN 0.311 and 0.311, simple_cnn 0.120 and 0.120 in bfloat16) or less, and the precision's tolerance
# on top covers a small model's where the loop's own is tiny (char_lstm's vmap: 0.021 against the loop's 0.007).
LOW_PRECISION_MARGIN = 1.25


def _norm_errors(got: dict, want: dict) -> dict:
    """Each parameter's error over the whole batch, in norm: ``||got - want|| / ||want||``."""
    return {
        name: ((got[name].detach().cpu().to(torch.float64) - ref).norm() / ref.norm().clamp_min(1e-300)).item()
        for name, ref in want.items()
    }


def compare_low_precision(model, loss_fn, inputs, targets, method: str, got: dict) -> Comparison:
    """``got``, ``method``'s gradients in bfloat16 or float16, judged as the module's docstring says: a
    ReferenceMismatch unless the method is right in float32; then, for each parameter, its error in norm against
    float64 beyond ``LOW_PRECISION_MARGIN`` x the loop's own for that parameter in this precision, held to the
    precision's tolerance."""
    as_float32 = copy.deepcopy(model).float()
    floats = inputs.float() if inputs.is_floating_point() else inputs
    assert_matches_reference(as_float32, loss_fn, floats, targets, method)
    want = reference_grads(model, loss_fn, inputs, targets)
    loop = _norm_errors(per_sample_grads(model, loss_fn, inputs, targets, method="loop"), want)
    prec = gradient_precision(got)
    for name, ref in want.items():
        if got[name].shape != ref.shape:
            raise ReferenceMismatch(
                f"method {method!r}: {name!r} has shape {tuple(got[name].shape)}, expected {tuple(ref.shape)}"
            )
    beyond = {name: error - LOW_PRECISION_MARGIN * loop[name] for name, error in _norm_errors(got, want).items()}
    return Comparison(
        method, f"{prec}: error in norm beyond {LOW_PRECISION_MARGIN:g}x the loop's", TOLERANCES[prec], beyond
    )


def compare(method: str, got: dict, expected: Expected, *, tolerance: float | None = None) -> Comparison:
    """Measure ``got``, the gradients ``method`` gave, against ``expected`` (see ``expect``).

    A parameter's error is its largest absolute difference from the reference,
    divided by the reference's largest absolute value for that parameter,
    taken over all samples but those at a kink (see ``unstable_samples``).
    """
    want, unstable = expected
    if got.keys() != want.keys():
        raise ReferenceMismatch(f"method {method!r} returned parameters {sorted(got)}, expected {sorted(want)}")
    for name, ref in want.items():
        if got[name].shape != ref.shape:
            raise ReferenceMismatch(
                f"method {method!r}: {name!r} has shape {tuple(got[name].shape)}, expected {tuple(ref.shape)}"
            )
    prec = gradient_precision(got)
    tolerance = TOLERANCES[prec] if tolerance is None else tolerance
    stable = torch.ones(len(next(iter(want.values()))), dtype=torch.bool)
    stable[list(unstable)] = False
    errors = {}
    for name, ref in want.items():
        per_sample = _sample_errors(got[name], ref, ref.abs().max().item())[stable]
        errors[name] = per_sample.max().item() if per_sample.numel() else 0.0
    return Comparison(method, prec, tolerance, errors, unstable)


def assert_matches_reference(
    model, loss_fn, inputs, targets, method: str, *, tolerance: float | None = None
) -> Comparison:
    """Like ``compare_with_reference``, but raise ``ReferenceMismatch`` naming the worst parameter."""
    comparison = compare_with_reference(model, loss_fn, inputs, targets, method, tolerance=tolerance)
    if not comparison.ok:
        raise ReferenceMismatch(str(comparison))
    return comparison
