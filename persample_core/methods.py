"""The ways to compute per-sample gradients, in one registry.

A method is a factory ``method(model, loss_fn) -> compute`` where
``compute(inputs, targets)`` returns ``{name: Tensor[B, *param.shape]}`` for
every trainable parameter, in ``model.named_parameters()`` order. One-time
work (building transforms, compiling) belongs in the factory, so a benchmark
can keep it out of the per-call time. Adding a method is one factory and one
``METHODS`` entry; both benchmark suites pick it up from there.

A method that cannot run here (an optional package missing, a layer it does
not support) raises ``MethodUnavailable`` with the reason, and the suites skip
it rather than fail.
"""
from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap

from persample_core.validate import check_batch, check_choice, check_model, checked_loss


class MethodUnavailable(RuntimeError):
    """This method cannot compute this model's per-sample gradients here; the message says why."""


def split_state(model):
    """Detached (trainable parameters, everything else) as two dicts for ``functional_call``."""
    trainable, fixed = {}, {}
    for name, p in model.named_parameters():
        (trainable if p.requires_grad else fixed)[name] = p.detach()
    fixed.update((name, b.detach()) for name, b in model.named_buffers())
    return trainable, fixed


def loop(model, loss_fn):
    """One forward and backward per sample, as in the tutorial: the baseline."""

    def compute(inputs, targets):
        names, params = zip(*((n, p) for n, p in model.named_parameters() if p.requires_grad))
        per_sample = [
            torch.autograd.grad(loss_fn(model(inputs[i : i + 1]), targets[i : i + 1]), params)
            for i in range(inputs.shape[0])
        ]
        return {name: torch.stack(grads) for name, grads in zip(names, zip(*per_sample))}

    return compute


def vmap_grad(model, loss_fn):
    """``torch.func``: ``vmap(grad(loss of one sample))`` over the batch, as in the tutorial.

    ``randomness="different"`` gives each sample its own dropout mask, which is
    what a per-sample gradient means for a model with dropout.
    """

    def sample_loss(params, fixed, x, y):
        return loss_fn(functional_call(model, (params, fixed), (x.unsqueeze(0),)), y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, None, 0, 0), randomness="different")

    def compute(inputs, targets):
        params, fixed = split_state(model)
        return per_sample(params, fixed, inputs, targets)

    return compute


METHODS = {
    "loop": loop,
    "vmap": vmap_grad,
}

BASELINE = "loop"


def prepare(model, loss_fn, *, method: str = "vmap"):
    """Check the model once and return ``compute(inputs, targets) -> {name: Tensor[B, ...]}``.

    Each call checks its batch (sizes, devices) before computing; an empty batch
    gives correctly shaped empty gradients. The model's parameters, buffers and
    ``.grad`` fields are left as they were.
    """
    check_choice("method", method, METHODS)
    check_model(model)
    loss_fn = checked_loss(loss_fn)
    compute = METHODS[method](model, loss_fn)

    def checked_compute(inputs, targets):
        if check_batch(model, inputs, targets) == 0:
            return {n: p.new_empty((0, *p.shape)) for n, p in model.named_parameters() if p.requires_grad}
        return compute(inputs, targets)

    return checked_compute


def per_sample_grads(model, loss_fn, inputs, targets, *, method: str = "vmap") -> dict[str, torch.Tensor]:
    """Gradient of ``loss_fn(model(x_i[None]), y_i[None])`` for every sample ``i``.

    Returns one entry per trainable parameter, keyed as in
    ``model.named_parameters()`` (frozen parameters left out), each of shape
    ``[B, *param.shape]``.
    """
    return prepare(model, loss_fn, method=method)(inputs, targets)
