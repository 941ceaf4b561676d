"""Every method on every zoo model is correct or declined, as docs/support-matrix.md publishes it."""

import pytest
import torch

from persample_core import METHODS
from persample_core.zoo import COLUMNS, ZOO, Verdict, outcomes, render, verdict
from tests.conftest import REPO

MATRIX = REPO / "docs" / "support-matrix.md"
REGENERATE = "python -m persample_core.zoo docs/support-matrix.md"

# vmap_compiled compiles every model anew (2-80 s each on this 2-core CPU), so the
# default run checks it where compiling is riskiest: dropout's per-sample random
# masks, and a model it declines. The matrix's other vmap_compiled cells come from
# the full run (REGENERATE) and are held to it by the checks of vmap, which it compiles.
COMPILED = ("dropout", "gru")


@pytest.fixture(scope="module")
def published():
    return outcomes(MATRIX.read_text())


def cells():
    for name in ZOO:
        for method in COLUMNS:
            if method != "vmap_compiled" or name in COMPILED:
                yield pytest.param(name, method, id=f"{name}-{method}")


@pytest.mark.parametrize("name, method", list(cells()))  # a list: pytest 10 refuses generators
def test_method_is_correct_or_declined_as_published(name, method, published):
    if method in ("opacus", "ghost"):
        pytest.importorskip("opacus")
    if method == "backpack":
        pytest.importorskip("backpack")
    got = verdict(name, method)
    assert got.outcome in ("correct", "declined"), got.detail
    assert "\n" not in got.detail
    assert got.outcome == published[name, method], f"docs/support-matrix.md is stale ({got.detail}); {REGENERATE}"


def test_published_matrix_has_a_verdict_for_every_model_and_method(published):
    assert set(published) == {(name, method) for name in ZOO for method in COLUMNS}, REGENERATE
    assert set(published.values()) <= {"correct", "declined"}


def test_rendered_matrix_reads_back_with_every_outcome():
    verdicts = {
        ("linear", "loop"): Verdict("correct", "4e-08"),
        ("linear", "opacus"): Verdict("declined", "opacus is not installed"),
        ("gru", "loop"): Verdict("wrong", "off by 1e-01"),
        ("gru", "opacus"): Verdict("declined", "opacus does not support GRU (rnn)"),
    }
    text = render(verdicts)
    assert outcomes(text) == {cell: v.outcome for cell, v in verdicts.items()}
    assert "1. opacus is not installed\n2. opacus does not support GRU (rnn)\n" in text
    assert "| | **correct/declined** | 1/0 | 0/2 |" in text


@pytest.mark.parametrize("method", ["same_mask", "no_dropout"])
def test_dropout_is_judged_wrong_unless_each_sample_draws_its_own_mask(method, monkeypatch):
    """A method that reuses one mask, or runs without dropout, computes gradients of some
    masks, but not of each sample's own."""
    loop = METHODS["loop"]

    def same_mask(model, loss_fn):
        def compute(inputs, targets):
            per_sample = []
            for i in range(len(inputs)):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    per_sample.append(loop(model, loss_fn)(inputs[i : i + 1], targets[i : i + 1]))
            return {name: torch.cat([g[name] for g in per_sample]) for name in per_sample[0]}

        return compute

    def no_dropout(model, loss_fn):
        return loop(model.eval(), loss_fn)

    monkeypatch.setitem(METHODS, method, {"same_mask": same_mask, "no_dropout": no_dropout}[method])
    got = verdict("dropout", method)
    assert got == Verdict("wrong", "every sample has the same dropout mask; each sample must draw its own")
