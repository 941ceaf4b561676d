"""The DP-SGD step's per-sample quantities: each sample's gradient norm, and the clipped sum.

DP-SGD (Abadi et al. 2016) clips each sample's gradient ``g_i`` to norm ``C``
and sums, ``sum_i g_i * min(1, C / ||g_i||)``, before adding noise; the norm is
taken over all trainable parameters together. A DP method is a factory
``method(model, loss_fn) -> compute(inputs, targets, max_norm) -> (norms,
clipped)``: ``norms`` a ``Tensor[B]``, ``clipped`` ``{name: Tensor[*shape]}``
keyed as ``model.named_parameters()`` (frozen ones left out). ``DP_METHODS``:

- every per-sample gradient method of ``METHODS``, by its name: the B x P
  gradients materialised, then clipped and summed (``materialised``);
- ``ghost``: Opacus's ghost clipping (``GradSampleModuleFastGradientClipping``,
  Li et al. 2021): each sample's norm from its layers' activations and
  backpropagated gradients, never the B x P gradients, then a second backward
  of the one-sample losses weighted by the clipping factors.

What a DP step costs is read against the step it replaces, one batched
forward and backward of the mean loss: the suite's ``nonprivate`` points
(``persample_bench.timing.nonprivate``, harness code as the floor is).

The clipped sum is defined on one-sample losses, so ``loss_fn`` must take the
mean over the batch (as a per-sample gradient's ``loss_fn`` does); the public
functions check it (``check_mean_loss``). ``compare_dp`` checks a method
against the float64 loop, with a ``max_norm`` that clips most samples and one
that clips none.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch.func import vmap

from persample_core.guard import replayed, rng_state
from persample_core.methods import (
    METHODS,
    MethodUnavailable,
    _declining_failures,
    _trainable_parameters,
    opacus_hooks,
    opacus_unsupported,
    prepare,
)
from persample_core.reference import Expected, expect, reference_grads
from persample_core.tolerance import TOLERANCES, precision
from persample_core.validate import check_batch, check_choice, check_model, checked_loss


@contextlib.contextmanager
def seeded_generators(seed: int | None, device: torch.device):
    """Inside, the CPU generator and ``device``'s seeded with ``seed`` (None: left alone); on the way out, both as
    they were. No other CUDA device's stream is touched (``torch.manual_seed`` would seed them all)."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
        yield


def clipping_factors(norms: torch.Tensor, max_norm: float) -> torch.Tensor:
    """``min(1, max_norm / norm)`` for each sample; 1 where the norm is 0."""
    return torch.where(norms > max_norm, max_norm / norms.clamp_min(torch.finfo(norms.dtype).tiny), 1.0)


def norms_of(grads: dict) -> torch.Tensor:
    """Each sample's gradient norm over every parameter of ``grads`` (``{name: Tensor[B, *shape]}``), accumulated in
    float32 at least (float16's squares overflow past a norm of 256)."""
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1, dtype=_accumulated(g)) for g in grads.values()]),
        dim=0,
    )


def _accumulated(tensor: torch.Tensor) -> torch.dtype:
    return torch.promote_types(tensor.dtype, torch.float32)


def clip_and_sum(grads: dict, norms: torch.Tensor, max_norm: float) -> dict:
    factors = clipping_factors(norms, max_norm)
    return {name: torch.einsum("b,b...->...", factors.to(g.dtype), g) for name, g in grads.items()}


def materialised(name: str):
    """The DP method of per-sample gradient method ``name``: its B x P gradients, clipped and summed."""

    def factory(model, loss_fn):
        per_sample = prepare(model, loss_fn, method=name)

        def compute(inputs, targets, max_norm):
            grads = per_sample(inputs, targets)
            norms = norms_of(grads)
            return norms, clip_and_sum(grads, norms, max_norm)

        compute.__wrapped__ = per_sample  # what it reports of itself (methods.compile_seconds) is the method's
        return compute

    factory.__doc__ = f"{name}'s per-sample gradients, clipped and summed."
    return factory


def one_sample_losses(loss_fn):
    """``[loss_fn(out_i[None], y_i[None]) for each i]`` in one vmapped call: the losses a per-sample gradient is of."""
    return vmap(lambda out, y: loss_fn(out.unsqueeze(0), y.unsqueeze(0)))


def ghost(model, loss_fn):
    """Opacus's ghost clipping: the norms without the B x P gradients, then one backward of the losses weighted by
    the clipping factors (exact ones, as the other methods': Opacus's own are ``C / (norm + 1e-6)``). Its hooks are
    on the model for the duration of a call only, and what Opacus leaves on the layers and parameters is removed
    (``methods.opacus_hooks``).

    Guarded, as the hook methods are (``persample_core.guard``): at the first call at each batch shape, on its first
    ``GUARD_SAMPLES`` samples, its norms must match those of Opacus's own per-sample gradients (the ``opacus``
    method, guarded in its turn; both drawing the same dropout masks), or it declines: a weight used outside its
    layer (``F.linear(h, emb.weight)``) is a use its hooks miss, and norms too small would clip too little, which
    breaks the privacy a DP step promises. A few samples tell, since what the hooks miss is the model's; the whole
    batch's per-sample gradients would cost the memory ghost clipping saves.
    """
    try:
        from opacus.grad_sample import GradSampleModuleFastGradientClipping
    except ImportError:
        raise MethodUnavailable("opacus is not installed; pip install 'persample-core[opacus]'") from None
    if reason := opacus_unsupported(model):
        raise MethodUnavailable(f"ghost: {reason}")
    named = _trainable_parameters(model)
    losses_of = one_sample_losses(loss_fn)
    checked_shapes = set()

    def norms_and_losses(wrapped, inputs, targets, max_norm):
        hooked = GradSampleModuleFastGradientClipping(
            model, batch_first=True, loss_reduction="sum", max_grad_norm=max_norm, use_ghost_clipping=True
        )
        wrapped.append(hooked)
        losses = losses_of(hooked(inputs), targets)
        used = torch.autograd.grad(losses.sum(), [p for _, p in named], retain_graph=True, allow_unused=True)
        missed = [n for (n, p), g in zip(named, used) if g is not None and "_norm_sample" not in p.__dict__]
        if missed:
            raise MethodUnavailable(f"ghost: Opacus's hooks give no per-sample norm of {missed[0]!r}: a use they miss")
        squares = [p._norm_sample.to(_accumulated(p)) ** 2 for (_, p), g in zip(named, used) if g is not None]
        hooked.disable_hooks()
        return torch.stack(squares).sum(0).sqrt(), losses

    def step(inputs, targets, max_norm):
        try:
            with opacus_hooks(model, named) as wrapped:
                norms, losses = norms_and_losses(wrapped, inputs, targets, max_norm)
                factors = clipping_factors(norms, max_norm).to(losses.dtype)
                sums = torch.autograd.grad((factors * losses).sum(), [p for _, p in named], allow_unused=True)
        except NotImplementedError as err:  # Opacus's refusal mid-call, e.g. "Parameter tying is not supported"
            raise MethodUnavailable(f"ghost: {err}") from None
        return norms, {n: torch.zeros_like(p) if s is None else s for (n, p), s in zip(named, sums)}

    def compute(inputs, targets, max_norm):
        check_batch(model, inputs, targets)
        if len(inputs) == 0:
            return inputs.new_zeros(0, dtype=_accumulated(named[0][1])), {n: torch.zeros_like(p) for n, p in named}
        if (inputs.shape, targets.shape) not in checked_shapes:
            check_against_opacus(inputs[:GUARD_SAMPLES], targets[:GUARD_SAMPLES], max_norm)
            checked_shapes.add((inputs.shape, targets.shape))
        return step(inputs, targets, max_norm)

    def check_against_opacus(inputs, targets, max_norm):
        """Both draw the masks of one state, and the generators are left as they were: the call after the guard
        draws what it would have drawn without it."""
        state = rng_state(inputs.device)
        with replayed(state, inputs.device):
            norms, _ = step(inputs, targets, max_norm)
        try:
            with replayed(state, inputs.device):
                grads = prepare(model, loss_fn, method="opacus")(inputs, targets)
        except MethodUnavailable as err:
            raise MethodUnavailable(f"ghost: {err}") from None
        want = norms_of(grads).to(norms.dtype)
        tolerance = TOLERANCES[precision(norms.dtype, norms.device)]
        off = ((norms - want).abs() / want.clamp_min(torch.finfo(want.dtype).tiny)).max().item()
        if not off <= 10 * tolerance:
            raise MethodUnavailable(
                f"ghost fails the guard: its norms differ from Opacus's per-sample gradients' by {off:.1e}, a use of "
                "a weight its hooks miss (a weight used outside its layer?)"
            )

    return compute


GUARD_SAMPLES = 8  # the samples ghost's guard checks (``ghost``)


DP_METHODS = {**{name: materialised(name) for name in METHODS}, "ghost": ghost}


def check_max_norm(max_norm) -> float:
    if isinstance(max_norm, bool) or not isinstance(max_norm, int | float) or not (0 < max_norm < math.inf):
        raise ValueError(
            f"max_norm must be a positive finite number, the norm each sample is clipped to; got {max_norm!r}"
        )
    return float(max_norm)


def check_mean_loss(model, loss_fn, inputs, targets) -> None:
    """Refuse a ``loss_fn`` that does not take the mean of the one-sample losses over the batch, in one line. The
    norms and sums are of one-sample losses whatever the reduction; what a loss on the batch means to the DP step
    it stands for (its noise is scaled to the batch's mean) is not, and a sum there is a bug to say."""
    if len(inputs) < 2:
        return
    loss_fn = checked_loss(loss_fn)  # a loss that is not a scalar is refused first, saying so
    with torch.no_grad(), torch.random.fork_rng(devices=[inputs.device] if inputs.device.type == "cuda" else []):
        outputs = model(inputs)
        batch, mean = loss_fn(outputs, targets), one_sample_losses(loss_fn)(outputs, targets).mean()
    if not torch.isclose(batch, mean, rtol=1e-3):
        raise ValueError(
            f"loss_fn on the batch is {float(batch):.6g}, the mean of its {len(inputs)} one-sample losses "
            f"{float(mean):.6g}: the clipped sum is defined on per-sample losses, so pass a loss that takes the mean "
            "over the batch (reduction='mean')"
        )


def prepare_dp(model, loss_fn, *, method: str = "vmap"):
    """The one-time work of DP method ``method``; returns ``compute(inputs, targets, max_norm) -> (norms,
    clipped sum)``, what a benchmark times."""
    check_choice("DP method", method, DP_METHODS)
    check_model(model)
    loss_fn = checked_loss(loss_fn)
    compute = _declining_failures(method, DP_METHODS[method](model, loss_fn), model, loss_fn)

    def checked_compute(inputs, targets, max_norm):
        check_batch(model, inputs, targets)  # the caller's mistake, before an error could pass for the method's
        return compute(inputs, targets, max_norm)

    checked_compute.__wrapped__ = compute  # for compile_seconds
    return checked_compute


def _prepared_for(model, loss_fn, inputs, targets, method: str):
    """``prepare_dp`` (which checks the method's name and the model), then the batch and the loss's reduction."""
    compute = prepare_dp(model, loss_fn, method=method)
    check_batch(model, inputs, targets)
    check_mean_loss(model, loss_fn, inputs, targets)
    return compute


def per_sample_norms(model, loss_fn, inputs, targets, *, method: str = "vmap") -> torch.Tensor:
    """Each sample's gradient norm over all trainable parameters, ``Tensor[B]``."""
    return _prepared_for(model, loss_fn, inputs, targets, method)(inputs, targets, math.inf)[0]


def clipped_sum(model, loss_fn, inputs, targets, *, max_norm: float, method: str = "vmap") -> dict:
    """``sum_i g_i * min(1, max_norm / ||g_i||)`` for each trainable parameter, ``{name: Tensor[*shape]}``."""
    max_norm = check_max_norm(max_norm)
    return _prepared_for(model, loss_fn, inputs, targets, method)(inputs, targets, max_norm)[1]


@dataclass(frozen=True)
class DPComparison:
    """A DP method's norms and clipped sum against the float64 loop's, each as a relative error."""

    method: str
    max_norm: float
    precision: str
    tolerance: float
    norm_error: float  # the largest of the samples' |norm - reference| / reference norm
    sum_errors: dict  # parameter -> ||clipped - reference|| / ||reference||

    @property
    def ok(self) -> bool:
        return all(error <= self.tolerance for error in (self.norm_error, *self.sum_errors.values()))  # NaN: not ok

    def __str__(self):
        name, error = max(self.sum_errors.items(), key=lambda item: math.inf if math.isnan(item[1]) else item[1])
        verdict = "within" if self.ok else "EXCEEDS"
        return (
            f"DP method {self.method!r} ({self.precision}, max_norm {self.max_norm:.3g}): norms off by "
            f"{self.norm_error:.2e}, clipped sum's worst parameter {name!r} by {error:.2e}, {verdict} tolerance "
            f"{self.tolerance:.0e}"
        )


def compare_dp(
    model, loss_fn, inputs, targets, method: str, *, max_norm: float, want=None, seed: int | None = None
) -> DPComparison:
    """``method``'s norms and clipped sum at ``max_norm`` against the float64 loop's on the same batch (``want``: its
    per-sample gradients, where the caller has them). ``seed``: the method draws its random numbers (dropout masks)
    from it, the masks ``want`` was computed with."""
    step = prepare_dp(model, loss_fn, method=method)
    with seeded_generators(seed, inputs.device):
        norms, clipped = step(inputs, targets, check_max_norm(max_norm))
    want = want if want is not None else reference_grads(model, loss_fn, inputs, targets)
    want_norms = norms_of(want)
    want_sum = clip_and_sum(want, want_norms, max_norm)
    prec = precision(next(iter(clipped.values())).dtype, next(iter(clipped.values())).device)
    norm_error = ((norms.detach().cpu().double() - want_norms).abs() / want_norms.clamp_min(1e-300)).max().item()
    sum_errors = {
        name: ((clipped[name].detach().cpu().double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()
        for name, ref in want_sum.items()
    }
    return DPComparison(method, max_norm, prec, TOLERANCES[prec], norm_error, sum_errors)


class DPMismatch(AssertionError):
    """A DP method's norms or clipped sum differ from the float64 loop's beyond the tolerance."""


def expect_dp(model, loss_fn, inputs, targets) -> Expected:
    """What a DP method is judged against on this batch: ``reference.expect`` at the model's precision, the float64
    loop's per-sample gradients and the samples at a kink; computed once for every method a caller checks."""
    some = next(p for p in model.parameters() if p.requires_grad)
    return expect(model, loss_fn, inputs, targets, precision(some.dtype, some.device))


def assert_dp_matches_reference(
    model, loss_fn, inputs, targets, method: str, *, expected: Expected | None = None, seed: int | None = None
) -> list[DPComparison]:
    """``compare_dp`` at a ``max_norm`` that clips most samples (a tenth of the median norm) and at one that clips
    none (twice the largest), on the batch less its samples at a kink (``reference.unstable_samples``: a float32
    computation may take the other, equally valid side there, and a norm or a sum holds every sample);
    ``DPMismatch`` naming the worse where either is off. ``expected``: ``expect_dp`` of this batch, where the
    caller has it; ``seed``: as ``compare_dp``'s (every sample is judged then: the masks are the whole batch's)."""
    expected = expected or expect_dp(model, loss_fn, inputs, targets)
    # A seeded method draws the whole batch's masks, which a subset would not: then every sample is judged.
    unstable = set(expected.unstable) if seed is None else set()
    kept = [i for i in range(len(inputs)) if i not in unstable] or list(range(len(inputs)))
    inputs, targets = inputs[kept], targets[kept]
    want = {name: grads[kept] for name, grads in expected.grads.items()}
    want_norms = norms_of(want)
    comparisons = [
        compare_dp(model, loss_fn, inputs, targets, method, max_norm=max_norm, want=want, seed=seed)
        for max_norm in (0.1 * want_norms.median().item(), 2 * want_norms.max().item())
    ]
    for comparison in comparisons:
        if not comparison.ok:
            raise DPMismatch(str(comparison))
    return comparisons
