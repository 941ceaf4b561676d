"""Bad input fails with one line naming the problem and the fix."""

import pytest
import torch
import torch.nn.functional as F

from persample_core import make_workload, per_sample_grads


@pytest.fixture
def mlp():
    return make_workload("mlp", batch_size=4)


def one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_batch_size_mismatch(mlp):
    with pytest.raises(
        ValueError, match="inputs have batch size 4 but targets have 3; pass one target per input sample"
    ) as e:
        per_sample_grads(mlp.model, mlp.loss_fn, mlp.inputs, mlp.targets[:3])
    one_line(e)


def test_unknown_method_lists_known_ones(mlp):
    with pytest.raises(ValueError, match=r"unknown method 'vamp'; choose one of: .*loop.*vmap") as e:
        per_sample_grads(*mlp, method="vamp")
    one_line(e)


def test_unknown_workload_lists_known_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown workload 'resnet'; choose one of: char_lstm, mlp, resnet18_gn, simple_cnn, tiny_transformer, "
        r"or give MODULE:FUNCTION",
    ):
        make_workload("resnet", batch_size=2)


def test_inputs_on_another_device_than_model(mlp):
    with pytest.raises(ValueError, match=r"inputs are on meta but the model is on cpu; move them with \.to\('cpu'\)"):
        per_sample_grads(mlp.model, mlp.loss_fn, mlp.inputs.to("meta"), mlp.targets)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so asking for it is not an error")
def test_cuda_requested_without_cuda():
    with pytest.raises(
        ValueError, match="device 'cuda' requested but CUDA is not available on this machine; use device='cpu'"
    ):
        make_workload("mlp", batch_size=2, device="cuda")


def test_invalid_device_string():
    with pytest.raises(ValueError, match="invalid device 'gpu0'"):
        make_workload("mlp", batch_size=2, device="gpu0")


@pytest.mark.parametrize("norm", [torch.nn.BatchNorm1d, torch.nn.SyncBatchNorm])
def test_batchnorm_in_training_mode(norm):
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), norm(4), torch.nn.Linear(4, 3))
    with pytest.raises(
        ValueError, match=r"1 is a \w*BatchNorm\w* in training mode.*call model.eval\(\) or use GroupNorm"
    ) as e:
        per_sample_grads(model, F.cross_entropy, torch.randn(5, 6), torch.randint(3, (5,)))
    one_line(e)


@pytest.mark.parametrize("method", ["loop", "vmap", "expanded_weights", "opacus"])
def test_loss_that_is_not_a_scalar(mlp, method):
    unreduced = lambda p, t: F.nll_loss(p, t, reduction="none")  # noqa: E731
    with pytest.raises(
        ValueError, match=r"loss_fn must return a scalar tensor for one sample, got \(1,\); reduce it"
    ) as e:
        per_sample_grads(mlp.model, unreduced, mlp.inputs, mlp.targets, method=method)
    one_line(e)


def test_loss_that_is_not_a_tensor(mlp):
    with pytest.raises(ValueError, match="loss_fn must return a scalar tensor for one sample, got float"):
        per_sample_grads(mlp.model, lambda p, t: 1.0, mlp.inputs, mlp.targets, method="loop")


@pytest.mark.parametrize(
    "args, error, message",
    [
        (
            ("not a model", F.nll_loss, torch.randn(2, 3), torch.zeros(2)),
            TypeError,
            "model must be a torch.nn.Module, got str",
        ),
        (
            (torch.nn.Linear(3, 2), "nll", torch.randn(2, 3), torch.zeros(2)),
            TypeError,
            "loss_fn must be callable, got str",
        ),
        (
            (torch.nn.Linear(3, 2), F.nll_loss, [[1.0]], torch.zeros(2)),
            TypeError,
            "inputs must be a torch.Tensor, got list",
        ),
        ((torch.nn.Linear(3, 2), F.nll_loss, torch.tensor(1.0), torch.zeros(2)), ValueError, "inputs is a scalar"),
    ],
)
def test_wrong_types(args, error, message):
    with pytest.raises(error, match=message):
        per_sample_grads(*args)


def test_model_without_trainable_parameters():
    model = torch.nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable parameters"):
        per_sample_grads(model, F.cross_entropy, torch.randn(2, 3), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("batch_size", [-1, 2.5, True])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size must be a non-negative int"):
        make_workload("mlp", batch_size=batch_size)


def test_integer_dtype_is_refused():
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        make_workload("mlp", batch_size=2, dtype=torch.int32)
