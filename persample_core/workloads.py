"""Workloads: a model, its loss, and a batch of data to take per-sample gradients of.

A workload is a function ``make(batch_size, device="cpu", dtype=torch.float32,
seed=0) -> (model, loss_fn, inputs, targets)``, the loss taking the mean over
the batch. Wherever a workload is named (``make_workload``, the suites,
``persample check``), a spec names it: a built-in's name (``BUILT_IN``), a
name a package registers in the ``persample.workloads`` entry-point group, or
``MODULE:FUNCTION`` (the module found on ``sys.path`` or in the current
folder). A function may say at which batch sizes it is timed by default with
a ``batch_sizes`` attribute. What a function returns is checked
(``check_made``): a wrong one is refused in one line naming the spec, the
problem and the fix (``WorkloadError``).

The built-ins are drawn on the CPU under their own seed (the global RNG is
left alone), then moved to the requested device and dtype (a cast: the weights
and floating inputs are stored in it, no autocast), so the same seed gives the
same weights and data on every device. Inputs are random, never zeros: timing
on zeros flatters some kernels.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import re
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from persample_core.validate import check_device


class Workload(NamedTuple):
    """What ``make_workload`` returns; unpacks as ``model, loss_fn, inputs, targets``."""

    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    inputs: torch.Tensor
    targets: torch.Tensor


class SimpleCNN(nn.Module):
    """The tutorial's SimpleCNN (1x28x28 images, 10 classes), with one fix.

    The tutorial computes ``log_softmax`` and then throws it away, feeding raw
    logits to ``nll_loss``; that "loss" is not a log-likelihood. Here the
    forward returns log-probabilities, so ``nll_loss`` on them is the real
    cross-entropy.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


class MLP(nn.Module):
    """A plain three-layer perceptron on flat features: all matmuls, no convolutions."""

    def __init__(self, in_features=256, hidden=512, classes=10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        return F.log_softmax(self.net(x), dim=1)


class TinyTransformer(nn.Module):
    """One pre-norm transformer block over token ids, mean-pooled into a classifier.

    Exercises Embedding, LayerNorm, softmax attention and a buffer (the
    sinusoidal positions), none of which the CNN or MLP has.
    """

    def __init__(self, vocab=1000, seq_len=32, dim=64, classes=10):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        position = torch.arange(seq_len).unsqueeze(1)
        freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(seq_len, dim)
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq)
        self.register_buffer("positions", pe)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 4 * dim)
        self.ff2 = nn.Linear(4 * dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        x = self.embed(tokens) + self.positions[: tokens.shape[1]]
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        x = x + self.proj(attn @ v)
        x = x + self.ff2(F.gelu(self.ff1(self.norm2(x))))
        return F.log_softmax(self.head(x.mean(dim=1)), dim=1)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: two 3x3 convolutions and a shortcut, GroupNorm after each convolution."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _group_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _group_norm(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), _group_norm(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _group_norm(channels):
    return nn.GroupNorm(min(32, channels), channels)


class ResNet18GN(nn.Module):
    """ResNet-18 with GroupNorm in place of BatchNorm, on CIFAR-10's 3x32x32 images: 11,181,642 parameters.

    torchvision's ``resnet18(num_classes=10, norm_layer=lambda c: nn.GroupNorm(min(32, c), c))`` layer for layer
    (its ImageNet stem too), the model TorchBench's ``functorch_dp_cifar10`` and ``opacus_cifar10`` time and DP
    papers train: BatchNorm mixes the samples of a batch, so per-sample gradients need another norm. Written here
    rather than taken from torchvision, whose wheels are built for one torch release each: the library needs torch
    alone.
    """

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = _group_norm(64)
        widths = (64, 128, 256, 512)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            nn.Sequential(BasicBlock(widths[max(i - 1, 0)], width, 1 if i == 0 else 2), BasicBlock(width, width))
            for i, width in enumerate(widths)
        )
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.log_softmax(self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)), dim=1)


class CharLSTM(nn.Module):
    """A character-level LSTM classifier, as in Opacus's char-LSTM example (names to their language): bytes
    embedded, one LSTM layer, the last hidden state classified; 118k parameters."""

    def __init__(self, vocab=256, embedding=64, hidden=128, classes=18):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding)
        self.lstm = nn.LSTM(embedding, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, chars):
        out, _ = self.lstm(self.embed(chars))
        return F.log_softmax(self.head(out[:, -1]), dim=1)


def _images(batch_size):
    return torch.randn(batch_size, 1, 28, 28), torch.randint(10, (batch_size,))


def _cifar(batch_size):
    return torch.randn(batch_size, 3, 32, 32), torch.randint(10, (batch_size,))


def _features(batch_size):
    return torch.randn(batch_size, 256), torch.randint(10, (batch_size,))


def _tokens(batch_size):
    return torch.randint(1000, (batch_size, 32)), torch.randint(10, (batch_size,))


def _names(batch_size):
    return torch.randint(256, (batch_size, 16)), torch.randint(18, (batch_size,))


def seeded(make_model, make_data, *, batch_size: int, seed: int) -> tuple:
    """``(make_model(), *make_data(batch_size))`` drawn under ``seed`` on the CPU; the global RNG is left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model(), *make_data(batch_size)


def built_in(make_model, make_data, batch_sizes):
    """A workload function of a model class and a data maker, drawn by ``seeded``, cast to ``dtype`` and moved to
    ``device``; the loss is cross-entropy (each model returns log-probabilities, ``F.nll_loss`` takes the mean)."""

    def make(batch_size, device="cpu", dtype=torch.float32, seed=0):
        model, inputs, targets = seeded(make_model, make_data, batch_size=batch_size, seed=seed)
        if inputs.is_floating_point():  # token ids stay integers
            inputs = inputs.to(dtype)
        return model.to(device=device, dtype=dtype), F.nll_loss, inputs.to(device), targets.to(device)

    make.batch_sizes = batch_sizes
    make.__doc__ = (make_model.__doc__ or "").split("\n")[0]
    return make


# The built-ins, registered in the entry-point group as any package's are (pyproject.toml).
simple_cnn = built_in(SimpleCNN, _images, (1, 8, 32, 64, 128))
mlp = built_in(MLP, _features, (1, 64))
tiny_transformer = built_in(TinyTransformer, _tokens, (1, 64))
resnet18_gn = built_in(ResNet18GN, _cifar, (1, 8, 32))
char_lstm = built_in(CharLSTM, _names, (1, 8, 64))
BUILT_IN = {
    "simple_cnn": simple_cnn,
    "mlp": mlp,
    "tiny_transformer": tiny_transformer,
    "resnet18_gn": resnet18_gn,
    "char_lstm": char_lstm,
}
WORKLOADS = BUILT_IN  # the name of the public API before workloads could be registered

DEFAULT_WORKLOAD = "simple_cnn"
GROUP = "persample.workloads"  # the entry-point group a package registers its workloads in
DEFAULT_BATCH_SIZES = (1, 8, 64)  # a workload's batch sizes where its function names none
CONTRACT = "make(batch_size, device, dtype, seed) -> (model, loss_fn, inputs, targets)"
NAME = re.compile(r"[A-Za-z0-9_.]+")  # a registered name: no '-', which separates a point id's fields, nor a comma


class WorkloadError(ValueError):
    """A workload spec that names nothing, or a function that breaks the contract; the message names the spec, the
    problem and the fix."""


def registered() -> dict:
    """The workloads packages register (``GROUP``), by name, not loaded; one that clashes with a built-in's name is
    refused by name."""
    found = {}
    for entry in entry_points(group=GROUP):
        if not NAME.fullmatch(entry.name):
            raise WorkloadError(
                f"workload {entry.name!r} ({entry.value}) is not a name a point id can hold; register it under "
                "letters, digits, '_' and '.' alone"
            )
        if entry.name in BUILT_IN:
            if entry.value != f"{__name__}:{entry.name}":
                package = getattr(getattr(entry, "dist", None), "name", None) or "a package"
                raise WorkloadError(
                    f"workload {entry.name!r} registered by {package} ({entry.value}) clashes with the built-in of "
                    "that name; register it under another name"
                )
            continue
        found[entry.name] = entry
    return found


def names() -> list[str]:
    """Every workload a spec can name by name: the built-ins, then the registered ones."""
    return [*BUILT_IN, *sorted(registered())]


def resolve(spec: str) -> Callable:
    """The workload function ``spec`` names (see the module's docstring), or a WorkloadError saying why not."""
    if not isinstance(spec, str) or not spec.strip():
        raise WorkloadError(f"a workload is a name or MODULE:FUNCTION, got {spec!r}")
    return _resolve(spec)


@functools.cache
def _resolve(spec: str) -> Callable:
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    if ":" in spec:
        return _from_module(spec)
    others = registered()
    if spec not in others:
        raise WorkloadError(
            f"unknown workload {spec!r}; choose one of: {', '.join(sorted([*BUILT_IN, *others]))}, "
            f"or give MODULE:FUNCTION, a function {CONTRACT}"
        )
    try:
        function = others[spec].load()
    except Exception as err:  # any error of a third party's import: said in one line
        raise WorkloadError(f"workload {spec!r} ({others[spec].value}) does not load: {_said(err)}") from None
    return _callable(spec, function)


def _said(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def _import(name: str):
    """``importlib.import_module(name)``, looking in the current folder too, as ``python -m`` would."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name.split(".")[0] or os.getcwd() in sys.path:
            raise
    sys.path.append(os.getcwd())
    return importlib.import_module(name)


def _from_module(spec: str) -> Callable:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise WorkloadError(f"workload {spec!r}: write MODULE:FUNCTION, e.g. mymodels:make")
    try:
        module = _import(module_name)
    except ModuleNotFoundError as err:
        parts = module_name.split(".")
        if err.name in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise WorkloadError(
                f"workload {spec!r}: no module {err.name!r} on sys.path or in {os.getcwd()}; run from its folder "
                "or add that folder to PYTHONPATH"
            ) from None
        raise WorkloadError(f"workload {spec!r}: importing {module_name} failed: {_said(err)}") from None
    except Exception as err:  # the user's module raised on import: its error, in one line
        raise WorkloadError(f"workload {spec!r}: importing {module_name} failed: {_said(err)}") from None
    found = module
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if found is None:
        defined = [
            name
            for name, value in vars(module).items()
            if callable(value) and not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        ]
        raise WorkloadError(
            f"workload {spec!r}: {module_name} has no {attribute!r}; name a function defined there "
            f"({', '.join(defined) or 'it defines none'})"
        )
    return _callable(spec, found)


def _callable(spec: str, function) -> Callable:
    if not callable(function) or isinstance(function, type):
        raise WorkloadError(f"workload {spec!r} is a {type(function).__name__}, not a function {CONTRACT}")
    return function


def batch_sizes(spec: str) -> tuple:
    """The batch sizes ``spec``'s function asks to be timed at (its ``batch_sizes``), else ``DEFAULT_BATCH_SIZES``."""
    sizes = getattr(resolve(spec), "batch_sizes", DEFAULT_BATCH_SIZES)
    if not isinstance(sizes, (tuple, list)) or not sizes or not all(_is_size(size) and size > 0 for size in sizes):
        raise WorkloadError(f"workload {spec!r}: its batch_sizes must be positive ints, e.g. (1, 8, 64); got {sizes!r}")
    return tuple(sizes)


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_made(spec: str, made, *, batch_size: int, device: torch.device, dtype: torch.dtype) -> Workload:
    """What ``spec``'s function returned, as a ``Workload``, or a WorkloadError naming what breaks the contract:
    four values; a module with a trainable parameter, on ``device``, its floating parameters in ``dtype``; a loss
    that is a scalar; inputs and targets with ``batch_size`` samples in their first dimension."""

    def refuse(problem: str, fix: str):
        raise WorkloadError(f"workload {spec!r}: {problem}; {fix}")

    if not isinstance(made, (tuple, list)) or len(made) != 4:
        what = f"{len(made)} values" if isinstance(made, (tuple, list)) else f"a {type(made).__name__}"
        refuse(f"returned {what}", "return four: (model, loss_fn, inputs, targets)")
    model, loss_fn, inputs, targets = made
    if not isinstance(model, nn.Module):
        refuse(f"its model is a {type(model).__name__}", "return a torch.nn.Module first")
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        refuse("its model has no trainable parameter", "set requires_grad=True on the parameters to differentiate")
    if not callable(loss_fn):
        refuse(f"its loss_fn is a {type(loss_fn).__name__}", "return a function loss_fn(outputs, targets) second")
    for what, tensor in (("inputs", inputs), ("targets", targets)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0 or tensor.shape[0] != batch_size:
            got = f"shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            refuse(f"its {what} are {got} for batch_size={batch_size}", "put the batch in the first dimension")
    for what, tensor in (
        *((f"its parameter {n!r}", p) for n, p in trainable),
        ("its inputs", inputs),
        ("its targets", targets),
    ):
        if tensor.device.type != device.type or (device.index is not None and tensor.device.index != device.index):
            refuse(f"{what} is on {tensor.device}, asked for {device}", "move the model and data with .to(device)")
        if tensor.is_floating_point() and what != "its targets" and tensor.dtype != dtype:
            refuse(f"{what} is {tensor.dtype}, asked for {dtype}", "cast the model and inputs with .to(dtype)")
    if batch_size:
        try:  # on the RNG's copy: dropout in the model must leave the caller's random stream alone
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                loss = loss_fn(model(inputs[:1]), targets[:1])
        except Exception as err:  # the user's model or loss on its own data: its error, in one line
            refuse(f"one sample's loss fails: {_said(err)}", "fix the model or the loss")
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
            refuse(f"its loss is {got}, not a scalar", "take the mean over the batch (reduction='mean')")
    return Workload(model, loss_fn, inputs, targets)


def make_workload(spec: str, *, batch_size: int, device="cpu", dtype=torch.float32, seed: int = 0) -> Workload:
    """Build workload ``spec`` (a built-in's name, a registered name or ``MODULE:FUNCTION``) with a batch of
    ``batch_size`` random samples, checked against the contract (``check_made``).

    A built-in's weights and data depend only on ``seed``; the global RNG is not
    touched. Floating-point inputs are cast to ``dtype``; integer inputs (token
    ids) and targets keep their integer dtype.
    """
    make = resolve(spec)
    if not _is_size(batch_size) or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    device = check_device(device)
    try:
        inspect.signature(make).bind(batch_size, device=device, dtype=dtype, seed=seed)
    except TypeError:
        raise WorkloadError(f"workload {spec!r} takes {inspect.signature(make)}; the contract is {CONTRACT}") from None
    except ValueError:  # a builtin without a signature: called as it is
        pass
    try:
        made = make(batch_size, device=device, dtype=dtype, seed=seed)
    except Exception as err:  # the user's function failed: its error, in one line
        raise WorkloadError(f"workload {spec!r}: calling it failed: {_said(err)}; fix the function") from None
    return check_made(spec, made, batch_size=batch_size, device=device, dtype=dtype)
