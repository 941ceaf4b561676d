"""The guard: a hook method's per-sample gradients must add up to the batch gradient."""

import pytest
import torch

import persample_core.methods as methods
from persample_core import MethodUnavailable, make_workload, per_sample_grads, prepare
from persample_core.guard import sum_error
from persample_core.reference import compare, expect
from persample_core.zoo import make_specimen, outcomes
from tests.test_zoo import MATRIX

pytestmark = pytest.mark.usefixtures("opacus_if_asked")


@pytest.fixture
def opacus_if_asked(request):
    if "opacus" in request.node.name:
        pytest.importorskip("opacus")


def test_guard_declines_opacus_on_tied_weights_it_gets_wrong():
    """The embedding's weight, sliced, is also the output projection: Opacus's hooks
    see the embedding's use of it and not the direct one (the issue's model)."""
    tied = make_specimen("tied_slice")
    unguarded = compare("opacus", per_sample_grads(*tied, method="opacus", guard=False), expect(*tied, "float32"))
    assert unguarded.worst[0] == "emb.weight" and unguarded.worst[1] > 0.5
    with pytest.raises(
        MethodUnavailable, match=r"^opacus fails the guard: .*'emb\.weight' add up .* within \d\.\de-01 \(tolerance"
    ):
        per_sample_grads(*tied, method="opacus")


def test_guard_declines_a_layer_whose_input_has_no_batch_dimension():
    """Position embeddings looked up by arange: Opacus gives one gradient per position."""
    with pytest.raises(MethodUnavailable, match=r"'pos\.weight' have shape \(7, 7, 6\), not \(4, 7, 6\)"):
        per_sample_grads(*make_specimen("positions"), method="opacus")


def correct_hook_cells():
    return [
        pytest.param(name, method, id=f"{name}-{method}")
        for (name, method), outcome in outcomes(MATRIX.read_text()).items()
        if method in methods.HOOK_METHODS and outcome == "correct"
    ]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name, method", correct_hook_cells())
def test_guard_is_quiet_where_the_method_is_correct(name, method, seed):
    """Other weights, other data and a larger batch than the published matrix's."""
    grads = per_sample_grads(*make_specimen(name, batch_size=16, seed=seed), method=method)
    assert all(len(g) == 16 for g in grads.values())


@pytest.fixture
def guard_calls(monkeypatch):
    calls = []

    def counting(per_sample, batch, batch_size):
        calls.append(batch_size)
        return None

    monkeypatch.setattr(methods, "mismatch", counting)
    return calls


@pytest.mark.parametrize("method", methods.HOOK_METHODS)
def test_guard_runs_at_the_first_call_at_each_batch_shape(method, guard_calls):
    model, loss_fn, inputs, targets = make_workload("mlp", batch_size=4)
    compute = prepare(model, loss_fn, method=method)
    for batch_size in (4, 4, 3, 4, 3):
        compute(inputs[:batch_size], targets[:batch_size])
    assert guard_calls == [4, 3]


@pytest.mark.parametrize("method, guard", [("vmap", True), ("loop", True), ("opacus", False)])
def test_guard_runs_on_hook_methods_only_and_when_asked(method, guard, guard_calls):
    per_sample_grads(*make_workload("mlp", batch_size=4), method=method, guard=guard)
    assert guard_calls == []


@pytest.mark.parametrize("method", methods.HOOK_METHODS)
def test_guard_replays_the_dropout_masks_and_leaves_the_random_stream_as_it_was(method):
    """Its batched forward draws the masks the method drew (else the sums differ and it
    would decline), and a caller's next random numbers are those it would get unguarded."""
    dropout = make_specimen("dropout", batch_size=16)
    after = []
    for guard in (True, False):
        torch.manual_seed(7)
        per_sample_grads(*dropout, method=method, guard=guard)
        after.append(torch.rand(3))
    assert torch.equal(*after)


def test_sum_error_is_rounding_for_a_float32_sum_and_not_for_a_missed_percent():
    """The tolerance's margins (1e-4 in float32): 64 random terms sum in float32 within
    ~1e-7 of their scale; 1% of every term missed is 4e-3 off, though they cancel."""
    per_sample = torch.randn(64, 1000, generator=torch.Generator().manual_seed(0))
    exact = per_sample.double().sum(0).float()
    assert sum_error(per_sample, exact) < 1e-6
    assert sum_error(0.99 * per_sample, exact) > 1e-3
