"""Workloads: a model, its loss, and a batch of data to take per-sample gradients of.

Every workload is built on the CPU under its own seed (the global RNG is left
alone), then moved to the requested device and dtype, so the same seed gives
the same weights and data on every device. Inputs are random, never zeros:
timing on zeros flatters some kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from persample_core.validate import check_choice, check_device


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


def _images(batch_size):
    return torch.randn(batch_size, 1, 28, 28), torch.randint(10, (batch_size,))


def _features(batch_size):
    return torch.randn(batch_size, 256), torch.randint(10, (batch_size,))


def _tokens(batch_size):
    return torch.randint(1000, (batch_size, 32)), torch.randint(10, (batch_size,))


# name -> (model class, data maker). The loss is cross-entropy for all three:
# each model returns log-probabilities and F.nll_loss takes the mean over the batch.
WORKLOADS = {
    "simple_cnn": (SimpleCNN, _images),
    "mlp": (MLP, _features),
    "tiny_transformer": (TinyTransformer, _tokens),
}

DEFAULT_WORKLOAD = "simple_cnn"


def seeded(make_model, make_data, *, batch_size: int, seed: int) -> tuple:
    """``(make_model(), *make_data(batch_size))`` drawn under ``seed`` on the CPU; the global RNG is left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model(), *make_data(batch_size)


def make_workload(name: str, *, batch_size: int, device="cpu", dtype=torch.float32, seed: int = 0) -> Workload:
    """Build workload ``name`` with a batch of ``batch_size`` random samples.

    Weights and data depend only on ``seed``; the global RNG is not touched.
    Floating-point inputs are cast to ``dtype``; integer inputs (token ids) and
    targets keep their integer dtype.
    """
    check_choice("workload", name, WORKLOADS)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    device = check_device(device)
    model, inputs, targets = seeded(*WORKLOADS[name], batch_size=batch_size, seed=seed)
    model = model.to(device=device, dtype=dtype)
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    return Workload(model, F.nll_loss, inputs.to(device), targets.to(device))
