"""A zoo of small models, each isolating one thing users' models have, and the support matrix over them.

On every zoo model, every method either matches the float64 loop within its
tolerance or declines (``MethodUnavailable``) naming the layer or use it cannot
handle; never a wrong answer, never a raw error from inside torch or Opacus.
tests/test_zoo.py holds each method to that, and to the verdicts published in
docs/support-matrix.md, which this module prints:

    python -m persample_core.zoo docs/support-matrix.md

Run it under another torch or Opacus to see what holds there.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrizations

from persample_core.dp import DP_METHODS, DPMismatch, assert_dp_matches_reference, expect_dp, seeded_generators
from persample_core.methods import METHODS, MethodUnavailable, per_sample_grads
from persample_core.reference import Expected, ReferenceMismatch, compare, expect, gradient_precision
from persample_core.workloads import Workload, seeded

CLASSES = 3
VOCAB = 11
SEQ_LEN = 7
BATCH_SIZE = 4


def _features(*shape):
    return lambda batch_size: (torch.randn(batch_size, *shape), torch.randint(CLASSES, (batch_size,)))


def _tokens(vocab=VOCAB):
    return lambda batch_size: (torch.randint(vocab, (batch_size, SEQ_LEN)), torch.randint(CLASSES, (batch_size,)))


def _then_linear(layer, features):
    """``layer`` followed by a linear classifier on its ``features`` flattened outputs."""
    return nn.Sequential(layer, nn.Flatten(), nn.Linear(features, CLASSES))


class TiedSlice(nn.Module):
    """An embedding whose weight, sliced, is also the output projection: ``h @ emb.weight[:k].t()``."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.fc = nn.Linear(6, 6)

    def forward(self, tokens):
        h = torch.tanh(self.fc(self.emb(tokens).mean(1)))
        return h @ self.emb.weight[:CLASSES].t()


class TiedLayers(nn.Module):
    """One Parameter as the weight of an Embedding and of the output Linear (weight tying, pytorch#80951)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(CLASSES, 6)
        self.fc = nn.Linear(6, 6)
        self.out = nn.Linear(6, CLASSES, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, tokens):
        return self.out(torch.tanh(self.fc(self.emb(tokens).mean(1))))


class DirectParameter(nn.Module):
    """A parameter of the model itself, used in ``forward`` outside any layer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, CLASSES)
        self.scale = nn.Parameter(torch.rand(CLASSES) + 0.5)

    def forward(self, x):
        return self.fc(x) * self.scale


class CustomLayer(nn.Module):
    """A layer of the user's own: parameters and arithmetic, no torch layer."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 5) / 3)
        self.bias = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return torch.tanh(x @ self.weight.t() + self.bias)


class Positions(nn.Module):
    """Learned position embeddings looked up by ``arange``: an input without a batch dimension, broadcast."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, 6)
        self.pos = nn.Embedding(SEQ_LEN, 6)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, tokens):
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        return self.head(torch.tanh(x).mean(1))


class ReusedLayer(nn.Module):
    """One layer applied twice in a forward."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.head = nn.Linear(5, CLASSES)

    def forward(self, x):
        return self.head(self.fc(torch.tanh(self.fc(x))))


class UnusedLayer(nn.Module):
    """A trainable layer that ``forward`` never calls: its per-sample gradients are zeros."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, CLASSES)
        self.spare = nn.Linear(5, CLASSES)

    def forward(self, x):
        return self.fc(x)


class Buffered(nn.Module):
    """A registered buffer (not trainable) in the forward."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, CLASSES)
        self.register_buffer("offset", torch.randn(5))

    def forward(self, x):
        return self.fc(x - self.offset)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(6, 2, batch_first=True)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


class Recurrent(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn(5, 6, batch_first=True)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(VOCAB, 6, mode="mean")
        self.head = nn.Linear(6, CLASSES)

    def forward(self, tokens):
        return self.head(self.bag(tokens))


class Dropped(nn.Module):
    """Dropout in training mode before the last layer, so each sample's mask shows in its gradient."""

    def __init__(self, p=0.5):
        super().__init__()
        self.hidden = nn.Linear(5, 8)
        self.drop = nn.Dropout(p)
        self.out = nn.Linear(8, CLASSES)

    def forward(self, x):
        return self.out(self.drop(torch.tanh(self.hidden(x))))


class _GivenMasks(nn.Module):
    """Dropout by given masks, the next one at each call: a batch's masks replayed sample by sample."""

    def __init__(self, masks, p):
        super().__init__()
        self.masks, self.p, self.calls = masks, p, 0

    def forward(self, x):
        self.calls += 1
        return x * self.masks[self.calls - 1] / (1 - self.p)


def _with_drawn_masks(model: Dropped, grads) -> nn.Module:
    """``model`` with its dropout replaced by the masks the method drew, read off its gradients.

    A dropped unit leaves a zero column in the last layer's per-sample weight
    gradient (tanh is never exactly zero), so the loop on the returned model
    (one call per sample, in order) is the reference for what the method
    computed. A method that gives every sample one mask, or drops nothing, is
    wrong: each sample draws its own.
    """
    masks = grads["out.weight"].detach().cpu().abs().sum(1) != 0
    if (masks == masks[0]).all():
        raise ReferenceMismatch("every sample has the same dropout mask; each sample must draw its own")
    replay = copy.deepcopy(model)
    replay.drop = _GivenMasks(masks, model.drop.p)
    return replay


def _eval_batch_norm():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, CLASSES)).eval()
    with torch.no_grad():  # running statistics as after training, not the identity of a fresh layer
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return model


def _frozen():
    """A frozen first layer, a frozen BatchNorm in eval mode (fine-tuning), a frozen bias."""
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, CLASSES))
    model[0].requires_grad_(False)
    model[1].requires_grad_(False).eval()
    model[3].bias.requires_grad_(False)
    return model


@dataclass(frozen=True)
class Specimen:
    """One zoo model: what it isolates, and how to build it and a batch for it.

    ``reference_model(model, grads)`` gives the model the float64 loop is run on
    to judge ``grads``; the model itself when None. A random model (dropout)
    needs the randomness the method drew.
    """

    isolates: str
    make_model: Callable[[], nn.Module]
    make_data: Callable[[int], tuple]
    reference_model: Callable | None = None


ZOO = {
    "linear": Specimen("Linear", lambda: nn.Linear(5, CLASSES), _features(5)),
    "linear_no_bias": Specimen("Linear without bias", lambda: nn.Linear(5, CLASSES, bias=False), _features(5)),
    "conv1d": Specimen(
        "Conv1d: padding='same', dilation, groups",
        lambda: _then_linear(nn.Conv1d(2, 4, 3, padding="same", dilation=2, groups=2), 4 * 10),
        _features(2, 10),
    ),
    "conv2d": Specimen(
        "Conv2d: stride, padding, dilation, groups",
        lambda: _then_linear(nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, groups=2), 4 * 9),
        _features(2, 6, 6),
    ),
    "conv2d_reflect": Specimen(
        "Conv2d with padding_mode='reflect'",
        lambda: _then_linear(nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"), 4 * 25),
        _features(2, 5, 5),
    ),
    "conv3d": Specimen(
        "Conv3d: stride, padding, groups",
        lambda: _then_linear(nn.Conv3d(2, 4, 3, stride=2, padding=1, groups=2), 4 * 8),
        _features(2, 4, 4, 4),
    ),
    "conv_transpose2d": Specimen(
        "ConvTranspose2d: stride, padding",
        lambda: _then_linear(nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1), 4 * 49),
        _features(2, 4, 4),
    ),
    "embedding": Specimen("Embedding", lambda: _then_linear(nn.Embedding(VOCAB, 6), 6 * SEQ_LEN), _tokens()),
    "embedding_padding_idx": Specimen(
        "Embedding with padding_idx (its row gets no gradient)",
        lambda: _then_linear(nn.Embedding(VOCAB, 6, padding_idx=0), 6 * SEQ_LEN),
        _tokens(),
    ),
    "embedding_max_norm": Specimen(
        "Embedding with max_norm (renormalises its weight in place)",
        lambda: _then_linear(nn.Embedding(VOCAB, 6, max_norm=1.0), 6 * SEQ_LEN),
        _tokens(),
    ),
    "embedding_bag": Specimen("EmbeddingBag, mode='mean', 2-D input", Bag, _tokens()),
    "layer_norm": Specimen("LayerNorm", lambda: nn.Sequential(nn.LayerNorm(5), nn.Linear(5, CLASSES)), _features(5)),
    "group_norm": Specimen("GroupNorm", lambda: _then_linear(nn.GroupNorm(2, 4), 4 * 3), _features(4, 3)),
    "instance_norm": Specimen(
        "InstanceNorm1d, affine", lambda: _then_linear(nn.InstanceNorm1d(4, affine=True), 4 * 3), _features(4, 3)
    ),
    "rms_norm": Specimen("RMSNorm", lambda: nn.Sequential(nn.RMSNorm(5), nn.Linear(5, CLASSES)), _features(5)),
    "batch_norm_eval": Specimen("BatchNorm1d in eval mode (running statistics)", _eval_batch_norm, _features(5)),
    "attention": Specimen("MultiheadAttention, batch_first", Attention, _features(SEQ_LEN, 6)),
    "transformer_layer": Specimen(
        "TransformerEncoderLayer (attention, LayerNorm, feed-forward), no dropout",
        lambda: _then_linear(nn.TransformerEncoderLayer(6, 2, 12, dropout=0.0, batch_first=True), 6 * SEQ_LEN),
        _features(SEQ_LEN, 6),
    ),
    "lstm": Specimen("LSTM, batch_first", lambda: Recurrent(nn.LSTM), _features(SEQ_LEN, 5)),
    "gru": Specimen("GRU, batch_first", lambda: Recurrent(nn.GRU), _features(SEQ_LEN, 5)),
    "tied_slice": Specimen("an embedding's weight, sliced, as the output projection", TiedSlice, _tokens()),
    "tied_layers": Specimen("one Parameter as the weight of an Embedding and a Linear", TiedLayers, _tokens(CLASSES)),
    "direct_parameter": Specimen("a parameter used in forward outside any layer", DirectParameter, _features(5)),
    "custom_layer": Specimen(
        "a layer of the user's own (parameters and arithmetic)",
        lambda: nn.Sequential(CustomLayer(), nn.Linear(4, CLASSES)),
        _features(5),
    ),
    "positions": Specimen("position embeddings looked up by arange, broadcast over the batch", Positions, _tokens()),
    "reused_layer": Specimen("one layer applied twice", ReusedLayer, _features(5)),
    "unused_layer": Specimen("a trainable layer forward never calls", UnusedLayer, _features(5)),
    "weight_norm": Specimen(
        "a parametrized weight (parametrizations.weight_norm)",
        lambda: nn.Sequential(parametrizations.weight_norm(nn.Linear(5, 4)), nn.Tanh(), nn.Linear(4, CLASSES)),
        _features(5),
    ),
    "frozen": Specimen("frozen layers: a Linear, a BatchNorm in eval mode, a bias", _frozen, _features(5)),
    "buffer": Specimen("a registered buffer in the forward", Buffered, _features(5)),
    "prelu": Specimen(
        "PReLU: a parametrized activation",
        lambda: nn.Sequential(nn.Linear(5, 4), nn.PReLU(), nn.Linear(4, CLASSES)),
        _features(5),
    ),
    "dropout": Specimen("Dropout in training mode: each sample its own mask", Dropped, _features(5), _with_drawn_masks),
}
if not hasattr(nn, "RMSNorm"):  # new in torch 2.4
    del ZOO["rms_norm"]


def make_specimen(name: str, *, batch_size: int = BATCH_SIZE, seed: int = 0) -> Workload:
    """Zoo model ``name`` with a batch of random samples drawn under ``seed``; the loss is cross-entropy."""
    specimen = ZOO[name]
    model, inputs, targets = seeded(specimen.make_model, specimen.make_data, batch_size=batch_size, seed=seed)
    return Workload(model, F.cross_entropy, inputs, targets)


@dataclass(frozen=True)
class Verdict:
    """A method on a zoo model: ``correct`` (detail: its worst relative error against float64), ``declined``
    (detail: the reason it gave), or ``wrong`` (detail: how far off), which a test fails on."""

    outcome: str
    detail: str


@functools.cache
def _expected(name: str, batch_size: int, seed: int, prec: str) -> Expected:
    """The float64 reference of a deterministic zoo model, computed once for all methods."""
    return expect(*make_specimen(name, batch_size=batch_size, seed=seed), prec)


# The DP methods that form no per-sample gradients (ghost clipping): a column each, judged by the norms and clipped
# sums they give (dp_verdict). The others' DP step is their gradients, clipped: their own column holds for it.
DP_ONLY = tuple(name for name in DP_METHODS if name not in METHODS)
COLUMNS = (*METHODS, *DP_ONLY)


def verdict(name: str, method: str, *, batch_size: int = BATCH_SIZE, seed: int = 0) -> Verdict:
    """Run ``method`` on zoo model ``name`` as a user would, then judge its gradients against the float64 loop."""
    if method in DP_ONLY:
        return dp_verdict(name, method, batch_size=batch_size, seed=seed)
    model, loss_fn, inputs, targets = make_specimen(name, batch_size=batch_size, seed=seed)
    try:
        with torch.random.fork_rng(devices=[]):  # the dropout masks drawn under ``seed`` too
            torch.manual_seed(seed)
            grads = per_sample_grads(model, loss_fn, inputs, targets, method=method)
    except MethodUnavailable as err:
        return Verdict("declined", str(err))
    reference_model = ZOO[name].reference_model
    try:
        if reference_model:
            expected = expect(reference_model(model, grads), loss_fn, inputs, targets, gradient_precision(grads))
        else:
            expected = _expected(name, batch_size, seed, gradient_precision(grads))
        comparison = compare(method, grads, expected)
    except ReferenceMismatch as err:
        return Verdict("wrong", str(err))
    if not comparison.ok:
        return Verdict("wrong", str(comparison))
    return Verdict("correct", f"{comparison.worst[1]:.0e}")


def dp_verdict(name: str, method: str, *, batch_size: int = BATCH_SIZE, seed: int = 0) -> Verdict:
    """DP method ``method`` on zoo model ``name`` (``dp.prepare_dp``), its norms and clipped sums judged against the
    float64 loop's where most samples are clipped and where none is (``dp.assert_dp_matches_reference``). Dropout's
    reference draws its masks as a batched forward does under ``seed`` (Opacus's, read off its gradients)."""
    model, loss_fn, inputs, targets = make_specimen(name, batch_size=batch_size, seed=seed)
    try:
        expected = None
        if reference_model := ZOO[name].reference_model:
            with seeded_generators(seed, inputs.device):
                grads = per_sample_grads(model, loss_fn, inputs, targets, method="opacus")
            expected = expect_dp(reference_model(model, grads), loss_fn, inputs, targets)
        comparisons = assert_dp_matches_reference(model, loss_fn, inputs, targets, method, expected=expected, seed=seed)
    except MethodUnavailable as err:
        return Verdict("declined", str(err))
    except (DPMismatch, ReferenceMismatch) as err:
        return Verdict("wrong", str(err))
    return Verdict("correct", f"{max(max(c.norm_error, *c.sum_errors.values()) for c in comparisons):.0e}")


def support_matrix(names=None, methods=None, **kwargs) -> dict[tuple[str, str], Verdict]:
    """``{(model, method): Verdict}`` over the zoo (or the ``names`` given) and ``COLUMNS`` (or ``methods``)."""
    return {(name, method): verdict(name, method, **kwargs) for name in names or ZOO for method in methods or COLUMNS}


def render(verdicts: dict[tuple[str, str], Verdict]) -> str:
    """The support matrix as the markdown of docs/support-matrix.md: a table, then each reason declined."""
    names = list(dict.fromkeys(name for name, _ in verdicts))
    methods = list(dict.fromkeys(method for _, method in verdicts))
    reasons = []

    def cell(v: Verdict) -> str:
        if v.outcome == "declined":
            reasons.append(v.detail)
            return f"declined [{len(reasons)}]"
        return f"{v.outcome} {v.detail}" if v.outcome == "correct" else f"**{v.outcome}**"

    rows = [f"| `{n}` | {ZOO[n].isolates} | " + " | ".join(cell(verdicts[n, m]) for m in methods) + " |" for n in names]
    counts = [
        "/".join(str(sum(verdicts[n, m].outcome == outcome for n in names)) for outcome in ("correct", "declined"))
        for m in methods
    ]
    versions = f"torch {torch.__version__}{_peer_versions()}"
    return "\n".join(
        [
            "# Support matrix: which method computes which layer",
            "",
            "Each cell is one method on one small model of the zoo (`persample_core/zoo.py`), run as a user would",
            "(`per_sample_grads`, the guard on) and judged against the float64 loop: **correct** with its worst",
            "relative error over the parameters (float32 tolerance 1e-4), or **declined** with the one-line reason",
            "the method gave (`MethodUnavailable`). No cell may be wrong or a raw error. `tests/test_zoo.py`",
            "holds the code to every cell of this file in the default test run, but to `vmap_compiled`'s, which",
            "compile each model anew, on a few models only (its `COMPILED`). How methods decline, and the guard",
            "that catches what hook methods miss on models not listed here: [guard.md](guard.md). The last",
            f"column{'s' if len(DP_ONLY) > 1 else ''}, {', '.join(f'`{m}`' for m in DP_ONLY)}, "
            "a DP method that forms no per-sample gradient, is judged by its per-sample norms and",
            "clipped sums (`persample_core.dp`) where most samples are clipped and where none is; every other",
            "method's DP step is its gradients clipped, which its own column holds for.",
            "",
            f"CPU, float32, batch of {BATCH_SIZE}, seed 0; {versions}. Regenerate with",
            "`python -m persample_core.zoo docs/support-matrix.md` (a few minutes, mostly compiling).",
            "",
            "| model | isolates | " + " | ".join(methods) + " |",
            "|---|---|" + "---|" * len(methods),
            *rows,
            "| | **correct/declined** | " + " | ".join(counts) + " |",
            "",
            "Reasons declined:",
            "",
            *(f"{i}. {reason}" for i, reason in enumerate(reasons, 1)),
            "",
        ]
    )


def outcomes(markdown: str) -> dict[tuple[str, str], str]:
    """``{(model, method): outcome}`` read back from a matrix ``render`` wrote (the reasons left out)."""
    lines = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| ")]
    methods = [cell.strip() for cell in lines[0][2:]]
    return {
        (row[0].strip().strip("`"), method): cell.split()[0].strip("*")
        for row in lines[1:]
        if row[0].strip()  # the counts row has no model
        for method, cell in zip(methods, row[2:])
    }


PEERS = {"opacus": "opacus", "backpack": "backpack-for-pytorch"}  # the methods' optional packages, by distribution


def _peer_versions() -> str:
    """``", opacus 1.6.0, backpack 1.7.1"``: the optional peers installed, as their distributions name them."""
    from importlib import metadata

    found = []
    for name, distribution in PEERS.items():
        try:
            found.append(f", {name} {metadata.version(distribution)}")
        except metadata.PackageNotFoundError:
            pass
    return "".join(found)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persample_core.zoo", description=__doc__.split("\n")[0])
    parser.add_argument("output", nargs="?", help="write the markdown here once every cell is in (default: print it)")
    args = parser.parse_args(argv)
    text = render(support_matrix())
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
