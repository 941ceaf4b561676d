"""Input checks: bad input fails here with one line naming the problem and the fix,
never with a traceback from deep inside torch."""

from __future__ import annotations

import torch
import torch.nn as nn


def check_choice(kind: str, name, known) -> None:
    """Raise ValueError for a name that is not one of ``known``, listing the known ones."""
    if name not in known:
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(known))}")


def check_device(device) -> torch.device:
    """Parse ``device`` and refuse a CUDA device this machine does not have."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r} ({err}); use 'cpu' or 'cuda'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available on this machine; use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device} requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no trainable parameters; set requires_grad=True on the ones to differentiate")
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"{name or 'model'} is a {type(module).__name__} in training mode, which mixes samples, "
                "so per-sample gradients are undefined; call model.eval() or use GroupNorm"
            )


def check_batch(model: nn.Module, inputs, targets) -> int:
    """Check a batch against the model and return its size."""
    for what, tensor in (("inputs", inputs), ("targets", targets)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() == 0:
            raise ValueError(f"{what} is a scalar; per-sample gradients need a leading batch dimension")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"inputs have batch size {inputs.shape[0]} but targets have {targets.shape[0]}; "
            "pass one target per input sample"
        )
    device = model_device(model)
    for what, tensor in (("inputs", inputs), ("targets", targets)):
        if tensor.device != device:
            raise ValueError(
                f"{what} are on {tensor.device} but the model is on {device}; move them with .to({str(device)!r})"
            )
    return inputs.shape[0]


def checked_loss(loss_fn):
    """Wrap ``loss_fn`` so that a non-scalar loss is refused by name, on every path.

    Under vmap the batch dimension is hidden, so ``dim()`` is the per-sample
    rank there too.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")

    def loss(predictions, targets):
        value = loss_fn(predictions, targets)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"loss_fn must return a scalar tensor for one sample, got {shape}; "
                "reduce it with .mean() or .sum() (e.g. reduction='mean')"
            )
        return value

    return loss
