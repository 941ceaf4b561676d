"""The DP-SGD step's per-sample norms and clipped sums, by every DP method, against the float64 loop, on models
used nowhere else; and the one-line refusal of what they cannot take."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from persample_core import DP_METHODS, DPMismatch, assert_dp_matches_reference, clipped_sum, dp, per_sample_norms
from persample_core.reference import reference_grads


class ConvGroupNorm(nn.Module):
    """A convolution, GroupNorm and a linear head: what a DP image model is made of."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.norm = nn.GroupNorm(3, 6)
        self.head = nn.Linear(6 * 5 * 5, 4)

    def forward(self, x):
        return self.head(torch.flatten(torch.tanh(self.norm(self.conv(x))), 1))


class EmbeddingLayerNorm(nn.Module):
    """Embedded tokens, LayerNorm, mean-pooled into a classifier: what a DP text model is made of."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(13, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 4)

    def forward(self, tokens):
        return self.head(self.norm(self.embed(tokens)).mean(1))


def plain_conv():
    """A convolution and a linear head: layers every hook method has a rule for (BackPACK none for the norms)."""
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 3 * 3, 4))


def batch(name, size=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = {"conv": ConvGroupNorm, "embedding": EmbeddingLayerNorm, "plain_conv": plain_conv}[name]()
    if name in ("conv", "plain_conv"):
        inputs = torch.randn(size, 2, 5, 5, generator=generator)
    else:
        inputs = torch.randint(13, (size, 7), generator=generator)
    return model, F.cross_entropy, inputs, torch.randint(4, (size,), generator=generator)


@pytest.mark.parametrize("method", sorted(set(DP_METHODS) - {"vmap_compiled"}))
@pytest.mark.parametrize("model", ["conv", "embedding", "plain_conv"])
def test_every_dp_method_matches_the_float64_loop_clipping_most_samples_and_none(method, model):
    """vmap_compiled compiles for each model and batch (seconds): its materialised form is vmap's, checked here."""
    tight, loose = assert_dp_matches_reference(*batch(model), method)
    want = dp.norms_of(reference_grads(*batch(model)))
    assert (want > tight.max_norm).sum() >= 5 and (want <= loose.max_norm).all()  # most clipped; none
    assert tight.precision == "float32" and max(tight.sum_errors.values()) < 1e-4 and tight.norm_error < 1e-4


def test_the_norms_are_each_samples_gradient_norm_over_every_parameter():
    model, loss_fn, inputs, targets = batch("conv")
    grads = reference_grads(model, loss_fn, inputs, targets)
    squares = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
    for method in ("loop", "ghost"):
        norms = per_sample_norms(model, loss_fn, inputs, targets, method=method).double()
        assert torch.allclose(norms, squares.sqrt(), rtol=1e-5), method


def test_the_clipped_sum_scales_each_sample_by_min_one_and_max_norm_over_its_norm():
    model, loss_fn, inputs, targets = batch("embedding")
    grads = reference_grads(model, loss_fn, inputs, targets)
    norms = dp.norms_of(grads)
    max_norm = norms.median().item()
    got = clipped_sum(model, loss_fn, inputs, targets, max_norm=max_norm, method="ghost")
    factors = torch.clamp(max_norm / norms, max=1.0)
    for name, g in grads.items():
        assert torch.allclose(
            got[name].double(), (factors.view(-1, *[1] * (g.dim() - 1)) * g).sum(0), rtol=1e-4, atol=1e-7
        )


def test_frozen_parameters_are_left_out_and_the_model_is_left_as_it_was():
    model, loss_fn, inputs, targets = batch("conv")
    model.conv.weight.requires_grad_(False)
    got = clipped_sum(model, loss_fn, inputs, targets, max_norm=0.1, method="ghost")
    assert "conv.weight" not in got and set(got) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.grad is None and "_norm_sample" not in p.__dict__ for p in model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks or hasattr(m, "activations") for m in model.modules())


def test_a_method_whose_norms_are_off_is_caught(monkeypatch):
    right = DP_METHODS["ghost"]

    def off(model, loss_fn):
        compute = right(model, loss_fn)
        return lambda inputs, targets, max_norm: (lambda n, s: (n * 1.001, s))(*compute(inputs, targets, max_norm))

    monkeypatch.setitem(DP_METHODS, "ghost", off)
    with pytest.raises(DPMismatch, match=r"DP method 'ghost' \(float32, max_norm .*\): norms off by 1.0\de-03"):
        assert_dp_matches_reference(*batch("conv"), "ghost")


def test_ghost_declines_what_opacus_cannot_hook_in_one_line():
    lstm = nn.Sequential(nn.Embedding(5, 4), nn.LSTM(4, 3, batch_first=True))
    with pytest.raises(dp.MethodUnavailable, match=r"^ghost: opacus does not support LSTM"):
        dp.prepare_dp(lstm, F.cross_entropy, method="ghost")


@pytest.mark.parametrize("max_norm", [0, -1.0, math.inf, math.nan, "1", True])
def test_max_norm_must_be_a_positive_finite_number(max_norm):
    with pytest.raises(ValueError, match=r"max_norm must be a positive finite number, the norm each sample is clipped"):
        clipped_sum(*batch("conv"), max_norm=max_norm)


def test_a_loss_that_sums_over_the_batch_is_refused_naming_the_reduction():
    model, _, inputs, targets = batch("conv")
    summed = lambda outputs, targets: F.cross_entropy(outputs, targets, reduction="sum")  # noqa: E731
    with pytest.raises(ValueError, match=r"pass a loss that takes the mean over the batch \(reduction='mean'\)"):
        clipped_sum(model, summed, inputs, targets, max_norm=1.0)


def test_a_model_with_no_trainable_parameter_is_refused():
    model, loss_fn, inputs, targets = batch("conv")
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable parameters"):
        per_sample_norms(model, loss_fn, inputs, targets)


def test_an_unknown_dp_method_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown DP method 'clip'; choose one of: backpack, expanded_weights, gh"):
        per_sample_norms(*batch("conv"), method="clip")


class TiedOutsideItsLayer(nn.Module):
    """An embedding whose weight is also the output projection, used outside its layer: a use hooks miss."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(13, 8)
        self.mix = nn.Linear(8, 8)

    def forward(self, tokens):
        return F.linear(torch.tanh(self.mix(self.embed(tokens).mean(1))), self.embed.weight[:4])


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.spare = nn.Linear(5, 4), nn.Linear(5, 4)

    def forward(self, x):
        return self.used(x)


def test_ghost_declines_a_weight_used_outside_its_layer_rather_than_clip_too_little():
    """Its hooks would give norms too small (4.23 for 4.52), so samples would be clipped too little."""
    model = TiedOutsideItsLayer()
    inputs, targets = torch.randint(13, (5, 7)), torch.randint(4, (5,))
    with pytest.raises(dp.MethodUnavailable, match=r"^ghost: opacus fails the guard|^ghost fails the guard"):
        clipped_sum(model, F.cross_entropy, inputs, targets, max_norm=1.0, method="ghost")


def test_ghost_counts_an_unused_parameter_as_zero_and_takes_an_empty_batch():
    model, inputs, targets = Unused(), torch.randn(4, 5), torch.randint(4, (4,))
    norms = per_sample_norms(model, F.cross_entropy, inputs, targets, method="ghost")
    assert torch.allclose(norms, per_sample_norms(model, F.cross_entropy, inputs, targets, method="loop"), rtol=1e-5)
    assert clipped_sum(model, F.cross_entropy, inputs, targets, max_norm=0.5, method="ghost")["spare.bias"].eq(0).all()
    norms, sums = dp.prepare_dp(model, F.cross_entropy, method="ghost")(inputs[:0], targets[:0], 1.0)
    assert norms.shape == (0,) and all(s.eq(0).all() for s in sums.values())


def test_a_failed_ghost_call_leaves_the_model_as_it_was_and_the_next_call_works():
    model, loss_fn, inputs, targets = batch("conv")
    model.head.weight.grad_sample = marker = torch.ones(1)
    before = {name: set(vars(m)) for name, m in model.named_modules()}
    compute = dp.prepare_dp(model, loss_fn, method="ghost")
    with pytest.raises((IndexError, RuntimeError), match="out of bounds|out of range"):
        compute(inputs, targets + 10, 1.0)  # targets out of range: the model's and the data's error, as it is
    assert {name: set(vars(m)) for name, m in model.named_modules()} == before
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert model.head.weight.grad_sample is marker
    norms, _ = compute(inputs, targets, 1.0)
    assert norms.shape == (len(inputs),)


@pytest.mark.parametrize("mutant", ["per-parameter clipping", "nan"])
def test_a_method_whose_clipped_sum_is_off_is_caught(monkeypatch, mutant):
    """Clipping each parameter to max_norm on its own is the classic mistake: right when nothing is clipped."""

    def wrong(model, loss_fn):
        per_sample = dp.prepare(model, loss_fn, method="vmap")

        def compute(inputs, targets, max_norm):
            grads = per_sample(inputs, targets)
            if mutant == "nan":
                sums = dp.clip_and_sum(grads, dp.norms_of(grads), max_norm)
                return dp.norms_of(grads), {**sums, "head.bias": sums["head.bias"] * math.nan}
            each = {n: dp.clip_and_sum({n: g}, dp.norms_of({n: g}), max_norm)[n] for n, g in grads.items()}
            return dp.norms_of(grads), each

        return compute

    monkeypatch.setitem(DP_METHODS, "vmap", wrong)
    with pytest.raises(DPMismatch, match="EXCEEDS"):
        assert_dp_matches_reference(*batch("conv"), "vmap")


def test_samples_at_a_kink_are_left_out_of_the_check(monkeypatch):
    calls, real = [], dp.expect
    monkeypatch.setattr(dp, "expect", lambda *args: calls.append(args) or real(*args)._replace(unstable=(0, 2)))
    tight, _ = assert_dp_matches_reference(*batch("conv", size=6), "loop")
    assert calls and tight.tolerance == 1e-4
    monkeypatch.setattr(dp, "compare_dp", lambda *args, **kw: calls.append(len(args[2])) or tight)
    assert_dp_matches_reference(*batch("conv", size=6), "loop")
    assert calls[-1] == 4  # six samples less the two at a kink


def test_ghost_clips_a_model_with_dropout_as_opacus_does_with_the_same_masks():
    """Its guard draws the call's masks again: with fresh ones it would decline every model with dropout."""
    pytest.importorskip("opacus", reason="opacus is not installed; pip install 'persample-core[opacus]'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3))
        inputs, targets = torch.randn(6, 5), torch.randint(3, (6,))
        got = {}
        for method in ("ghost", "opacus"):
            torch.manual_seed(7)
            try:
                got[method] = dp.prepare_dp(model, F.cross_entropy, method=method)(inputs, targets, 0.3)
            except dp.MethodUnavailable as err:
                pytest.fail(f"{method} declined a model with dropout: {err}")
    (ghost_norms, ghost_sum), (norms, clipped) = got["ghost"], got["opacus"]
    assert torch.allclose(ghost_norms, norms, rtol=1e-5)
    assert all(torch.allclose(ghost_sum[name], clipped[name], rtol=1e-5, atol=1e-7) for name in clipped)


@pytest.mark.parametrize("method", ["vmap", "ghost"])
def test_a_prepared_steps_batch_mistake_is_the_callers_not_the_methods(method):
    """Run through the decline wrapper, a targets/inputs mismatch would pass for the method's failure (a skip)."""
    model, loss_fn, inputs, targets = batch("plain_conv")
    step = dp.prepare_dp(model, loss_fn, method=method)
    try:
        step(inputs, targets[:5], 1.0)
    except dp.MethodUnavailable as err:  # a skip, were it let through (conftest)
        pytest.fail(f"the caller's mistake was taken for the method's: {err}")
    except ValueError as err:
        assert str(err).startswith("inputs have batch size 6 but targets have 5")
    else:
        pytest.fail("a batch with too few targets was computed")
