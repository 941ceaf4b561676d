"""The guard on hook methods: per-sample gradients must add up to the batch gradient.

A hook method (expanded_weights, opacus) builds a parameter's per-sample
gradients from the layers it hooks, by each layer's own rule. A use of the
parameter outside those layers (a tied or sliced weight, a weight used directly
in ``forward``) or a layer setting the rule ignores (an Embedding's
``padding_idx``, a convolution's ``padding_mode``) goes unseen, and the result
is silently wrong. Whatever a method misses, correct per-sample gradients add
up over the batch to the gradient of the summed per-sample losses, which one
plain batched backward gives; the guard computes that and compares. It checks
the shapes too: a layer whose input has no batch dimension in front (a position
embedding looked up by ``arange``) gives one gradient per position, not per
sample.

What the sum cannot see (docs/guard.md): a batched forward that mixes samples
(batch statistics, a branch on the whole batch), and a layer applied along a
non-leading dimension that happens to be as long as the batch. There the parts
still add up to the whole without being per-sample gradients.
"""

from __future__ import annotations

import contextlib

import torch

from persample_core.tolerance import TOLERANCES, precision


def rng_state(device: torch.device) -> tuple:
    """The state of the random generators a computation on ``device`` draws from (dropout masks)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextlib.contextmanager
def replayed(state, device: torch.device):
    """Draw again the random numbers drawn from ``state``, then leave the generators as they were.

    The guard's batched forward so draws the method's dropout masks, and a
    caller's random stream is the same whether the guard ran or not.
    """
    cpu_state, cuda_state = state
    with torch.random.fork_rng(devices=[device] if cuda_state is not None else []):
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
        yield


def sum_error(per_sample: torch.Tensor, total: torch.Tensor) -> float:
    """How far ``per_sample`` (B x shape) sums from ``total``, relative to the largest sum of absolute values.

    The scale is that of the terms, ``sum_i |g_i|``, not of their sum: per-sample
    gradients cancel each other, and rounding errs in proportion to the terms.
    It is summed a few samples at a time: ``abs()`` of all B x P at once makes a
    temporary as large as the result, and costs ten times the sum.
    """
    terms = sum(chunk.abs().sum(0) for chunk in per_sample.split(4))
    scale = torch.maximum(terms, total.abs()).max()
    difference = (per_sample.sum(0) - total).abs().max()
    return (difference / scale).item() if scale > 0 else 0.0


def mismatch(per_sample: dict, batch: dict, batch_size: int) -> str | None:
    """What is wrong with the first parameter whose per-sample gradients do not fit its batch gradient; None if none.

    Two computations of one sum in the same precision differ by rounding only,
    which is far below the tolerance a method of that precision is held to
    against float64 (``TOLERANCES``); a missed use of a parameter is off by the
    size of that use. docs/guard.md has the figures.
    """
    for name, total in batch.items():
        got = per_sample[name]
        expected = (batch_size, *total.shape)
        if tuple(got.shape) != expected:
            return (
                f"its per-sample gradients of {name!r} have shape {tuple(got.shape)}, not {expected}: "
                "a layer's input does not have the batch as its first dimension"
            )
        error, tolerance = sum_error(got, total), TOLERANCES[precision(got.dtype, got.device)]
        if not error <= tolerance:  # NaN too
            return (
                f"its per-sample gradients of {name!r} add up to the batch gradient only within {error:.1e} "
                f"(tolerance {tolerance:.0e}): it misses a use of {name!r} or a setting of its layer"
            )
    return None
