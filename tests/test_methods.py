"""What the methods beyond loop and vmap promise besides matching the reference
(which tests/test_correctness.py checks for every method)."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import persample_core.methods as methods
from persample_bench.prepare import prepare_point
from persample_bench.runformat import Point
from persample_core import (
    MethodUnavailable,
    assert_matches_reference,
    compile_seconds,
    make_workload,
    per_sample_grads,
    prepare,
)
from persample_core.methods import HOOK_METHODS
from persample_core.zoo import make_specimen

pytest_plugins = ["pytester"]


@pytest.fixture
def linear():
    """The smallest model, so that each compilation takes about a second."""
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2), F.cross_entropy, torch.randn(4, 3), torch.randint(2, (4,))


def test_compile_time_is_counted_for_calls_that_compile_only(linear):
    model, loss_fn, inputs, targets = linear
    compute = prepare(model, loss_fn, method="vmap_compiled")
    assert compile_seconds(compute) == 0.0
    compute(inputs, targets)
    first = compile_seconds(compute)
    assert first > 0
    compute(inputs, targets)
    assert compile_seconds(compute) == first
    compute(inputs[:3], targets[:3])  # dynamic=False: a new batch size compiles again
    assert compile_seconds(compute) > first


def test_compile_time_is_reported_by_the_suite_and_absent_for_other_methods():
    compiled = prepare_point(Point("mlp", "vmap_compiled", 2, "cpu"))
    assert compiled.compile_seconds > 0
    assert prepare_point(Point("mlp", "vmap", 2, "cpu")).compile_seconds is None


@pytest.fixture
def compilable(linear):
    """Skip, saying why, where this torch cannot run vmap_compiled at all (the tests below patch its insides)."""
    try:
        prepare(*linear[:2], method="vmap_compiled")
    except MethodUnavailable as err:
        pytest.skip(str(err))


def test_compiler_failure_makes_the_method_unavailable(linear, compilable, monkeypatch):
    def no_compiler(gm, example_inputs):
        raise RuntimeError("no C++ compiler found")

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend=no_compiler, **kw))
    with pytest.raises(
        MethodUnavailable,
        match=r"torch.compile cannot compile here \(no_compiler\): RuntimeError: no C\+\+ compiler found$",
    ):
        per_sample_grads(*linear, method="vmap_compiled")


def test_compiled_models_beyond_dynamos_recompile_limit_stay_compiled(linear, compilable):
    """All compiled vmaps share one dynamo cache; at its limit (8 by default, 1
    here to keep the test short) dynamo would silently run the next model eagerly.
    (dynamo's own patch: monkeypatch would delete the setting on undo, hiding it.)"""
    import torch._dynamo

    model, loss_fn, inputs, targets = linear
    with torch._dynamo.config.patch(recompile_limit=1):
        for batch_size in (1, 2):
            compute = prepare(model, loss_fn, method="vmap_compiled")
            compute(inputs[:batch_size], targets[:batch_size])
            assert compile_seconds(compute) > 0, batch_size


@pytest.mark.parametrize("chunk_size", [1, 3, 7])
def test_chunks_give_the_same_gradients_in_ceil_b_over_c_passes(chunk_size, monkeypatch):
    model, loss_fn, inputs, targets = make_workload("mlp", batch_size=7, dtype=torch.float64)
    passes = []

    def counting_loss(predictions, targets):
        passes.append(predictions.shape)  # vmap traces the loss once per chunk
        return loss_fn(predictions, targets)

    monkeypatch.setenv("PERSAMPLE_CHUNK_SIZE", str(chunk_size))
    chunked = per_sample_grads(model, counting_loss, inputs, targets, method="vmap_chunked")
    assert len(passes) == -(-7 // chunk_size)
    whole = per_sample_grads(model, loss_fn, inputs, targets, method="vmap")
    for name, grads in whole.items():
        torch.testing.assert_close(chunked[name], grads, rtol=1e-12, atol=1e-14)


def test_default_chunk_size_is_used_without_the_variable(monkeypatch):
    monkeypatch.delenv("PERSAMPLE_CHUNK_SIZE", raising=False)
    assert methods.chunk_size_setting() == methods.DEFAULT_CHUNK_SIZE == 16


@pytest.mark.parametrize("value", ["0", "-2", "abc", "2.5"])
def test_bad_chunk_size_names_the_variable(value, monkeypatch):
    monkeypatch.setenv("PERSAMPLE_CHUNK_SIZE", value)
    with pytest.raises(
        ValueError, match=f"PERSAMPLE_CHUNK_SIZE must be a positive integer, got '{value}'; unset it for 16"
    ):
        per_sample_grads(*make_workload("mlp", batch_size=2), method="vmap_chunked")


def _state(model):
    """Everything a method could leave behind on the model: attributes, hooks, grads."""
    return (
        [(name, sorted(vars(p)), p.grad) for name, p in model.named_parameters()],
        [(name, sorted(vars(m))) for name, m in model.named_modules()],
        [(name, dict(m._forward_hooks), dict(m._backward_hooks)) for name, m in model.named_modules()],
    )


@pytest.mark.parametrize("method", HOOK_METHODS)
def test_hook_methods_leave_no_attributes_hooks_or_grads_behind(method):
    model, loss_fn, inputs, targets = make_workload("simple_cnn", batch_size=3)
    model.fc2.bias.grad = torch.ones(10)
    before = _state(model)
    per_sample_grads(model, loss_fn, inputs, targets, method=method)
    assert _state(model) == before


@pytest.mark.parametrize("method", HOOK_METHODS)
def test_hook_methods_keep_an_existing_grad_sample(method):
    model, loss_fn, inputs, targets = make_workload("mlp", batch_size=3)
    mine = torch.zeros(1)
    model.net[0].weight.grad_sample = mine
    grads = per_sample_grads(model, loss_fn, inputs, targets, method=method)
    assert model.net[0].weight.grad_sample is mine and grads["net.0.weight"].shape == (3, 512, 256)


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda out, y: F.nll_loss(out, y, reduction="sum"),
        lambda out, y: F.nll_loss(out, y) ** 2,  # of a batch: the squared mean, neither a sum nor a mean of samples
    ],
    ids=["sum", "squared_mean"],
)
@pytest.mark.parametrize("method", HOOK_METHODS)
def test_hook_methods_take_the_loss_of_each_sample_alone(method, loss_fn):
    """Hooks scale by a batch loss's reduction; per-sample gradients are those of
    ``loss_fn`` on one sample, whatever ``loss_fn`` does with a batch."""
    model, _, inputs, targets = make_workload("mlp", batch_size=5)
    hooks = per_sample_grads(model, loss_fn, inputs, targets, method=method)
    loop = per_sample_grads(model, loss_fn, inputs, targets, method="loop")
    for name, grads in loop.items():
        torch.testing.assert_close(hooks[name], grads, rtol=1e-4, atol=1e-6)


def test_expanded_weights_names_an_unsupported_layer():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.PReLU(), torch.nn.Linear(3, 2))
    with pytest.raises(
        MethodUnavailable, match=r"expanded_weights does not support PReLU \(1\); it handles Linear, Conv1d"
    ):
        per_sample_grads(
            model, F.cross_entropy, torch.randn(2, 4), torch.zeros(2, dtype=torch.long), method="expanded_weights"
        )


def test_opacus_names_a_layer_with_buffers():
    pytest.importorskip("opacus", reason="opacus is not installed; pip install 'persample-core[opacus]'")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)).eval()
    with pytest.raises(MethodUnavailable, match=r"opacus: .*\(1:BatchNorm1d\(3"):
        per_sample_grads(model, F.cross_entropy, torch.randn(2, 4), torch.zeros(2, dtype=torch.long), method="opacus")


def test_a_method_failing_where_the_loop_does_not_declines_naming_the_layer():
    """vmap cannot batch GRU's in-place update of its hidden state."""
    with pytest.raises(MethodUnavailable) as excinfo:
        per_sample_grads(*make_specimen("gru"), method="vmap")
    assert str(excinfo.value) == (
        "vmap fails where the loop does not, in rnn (GRU): "
        "RuntimeError: output with shape [1, 6] doesn't match the broadcast shape [4, 1, 6]"
    )


def test_a_compiler_error_is_reported_by_its_root_cause():
    """torch.compile raises its own error, pages long, while handling the one that failed."""
    with pytest.raises(MethodUnavailable) as excinfo:
        per_sample_grads(*make_specimen("embedding_max_norm"), method="vmap_compiled")
    assert str(excinfo.value).startswith(
        "vmap_compiled fails where the loop does not, in 0 (Embedding): RuntimeError: vmap: aten::embedding_renorm_"
    )
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("method", ["vmap", "expanded_weights"])
def test_an_error_the_loop_shares_is_the_models_and_raised_as_it_is(method):
    model = torch.nn.Linear(4, 2)
    with pytest.raises(RuntimeError, match="cannot be multiplied") as excinfo:
        per_sample_grads(model, F.cross_entropy, torch.randn(3, 5), torch.zeros(3, dtype=torch.long), method=method)
    assert not isinstance(excinfo.value, MethodUnavailable)


def test_running_out_of_memory_is_raised_as_it_is(monkeypatch):
    """Out of memory is the batch's size, not the method's limit: the suites record it as such."""

    def out_of_memory(model, loss_fn):
        def compute(inputs, targets):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        return compute

    monkeypatch.setitem(methods.METHODS, "vmap", out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        per_sample_grads(*make_workload("mlp", batch_size=2), method="vmap")


def test_opacus_refuses_a_model_in_eval_mode():
    """Opacus records activations in training mode only: in eval mode it would return no gradients."""
    pytest.importorskip("opacus", reason="opacus is not installed; pip install 'persample-core[opacus]'")
    model, loss_fn, inputs, targets = make_workload("mlp", batch_size=2)
    with pytest.raises(
        MethodUnavailable, match="opacus records activations in training mode only, and net.0 is in eval mode"
    ):
        per_sample_grads(model.eval(), loss_fn, inputs, targets, method="opacus")


def test_without_opacus_its_tests_are_skipped_with_the_install_hint(pytester):
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(
        """
        import sys
        from persample_core import make_workload, per_sample_grads

        def test_opacus(monkeypatch):
            monkeypatch.setitem(sys.modules, "opacus", None)  # import opacus now raises ImportError
            per_sample_grads(*make_workload("mlp", batch_size=2), method="opacus")
        """
    )
    result = pytester.runpytest_inprocess("-rs", f"--rootdir={pytester.path}")
    result.assert_outcomes(skipped=1)
    result.stdout.re_match_lines([r"SKIPPED .*: opacus is not installed; pip install 'persample-core\[opacus\]'$"])


def backpack_or_skip():
    return pytest.importorskip("backpack", reason="backpack is not installed; pip install backpack-for-pytorch")


@pytest.mark.parametrize("workload", ["simple_cnn", "char_lstm"])
def test_backpack_matches_the_float64_loop_on_convolutions_and_an_lstm(workload):
    backpack_or_skip()
    try:  # a decline here would pass as a skip (conftest)
        comparison = assert_matches_reference(*make_workload(workload, batch_size=4, seed=3), "backpack")
    except MethodUnavailable as err:
        pytest.fail(f"backpack declined {workload}: {err}")
    assert comparison.ok and comparison.precision == "float32"


def test_backpack_declines_a_layer_it_has_no_rule_for_naming_it():
    backpack_or_skip()
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GroupNorm(1, 3), torch.nn.Linear(3, 2))
    with pytest.raises(
        MethodUnavailable, match=r"^backpack's BatchGrad has no rule for GroupNorm \(1\); it handles Li"
    ):
        per_sample_grads(model, F.cross_entropy, torch.randn(2, 4), torch.zeros(2, dtype=torch.long), method="backpack")


def hooks_and_leftovers(model):
    return [
        (name, len(m._forward_hooks), len(m._backward_hooks), m._is_full_backward_hook, sorted(vars(m)))
        for name, m in model.named_modules()
    ] + [(name, sorted(vars(p))) for name, p in model.named_parameters()]


def test_backpack_leaves_the_model_as_it_was_after_a_call_and_after_a_failed_one():
    backpack_or_skip()
    from backpack.context import CTX

    model, loss_fn, inputs, targets = make_workload("simple_cnn", batch_size=3)
    before, handles = hooks_and_leftovers(model), len(CTX.hook_handles)
    old = model.fc1.weight.grad_batch = torch.ones(1)  # a field of the caller's own, put back
    compute = methods.prepare(model, loss_fn, method="backpack")
    try:
        compute(inputs, targets)
    except MethodUnavailable as err:
        pytest.fail(f"backpack declined simple_cnn: {err}")
    with pytest.raises(RuntimeError, match="cannot be multiplied"):  # past the convolutions, their inputs stored
        compute(torch.randn(3, 1, 30, 30), targets)
    assert model.fc1.weight.grad_batch is old
    del model.fc1.weight.grad_batch
    assert hooks_and_leftovers(model) == before and len(CTX.hook_handles) == handles
    assert compute(inputs, targets)["conv1.weight"].shape == (3, *model.conv1.weight.shape)
    model.fc1.register_backward_hook(lambda *args: None)  # a plain hook of the caller's: refused were the flag left


def test_without_backpack_it_declines_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "backpack", None)  # import backpack now raises ImportError
    with pytest.raises(MethodUnavailable, match=r"^backpack is not installed; pip install backpack-for-pytorch"):
        per_sample_grads(*make_workload("mlp", batch_size=2), method="backpack")
