"""Workloads: the contract, the three ways to name one (a built-in, a registered name, MODULE:FUNCTION), and the
one-line refusal of each way a user's function can break the contract."""

import importlib.metadata
import sys
import textwrap

import pytest
import torch

from persample_core import WorkloadError, make_workload
from persample_core import workloads as w

GOOD = """
import torch
import torch.nn as nn
import torch.nn.functional as F


def make(batch_size, device="cpu", dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(device=device, dtype=dtype)
    inputs = torch.randn(batch_size, 6, generator=generator).to(device=device, dtype=dtype)
    return model, F.cross_entropy, inputs, torch.randint(3, (batch_size,), generator=generator).to(device)


make.batch_sizes = (2, 5)


def three(batch_size, device="cpu", dtype=torch.float32, seed=0):
    return make(batch_size, device, dtype, seed)[:3]


def short(batch_size, device="cpu", dtype=torch.float32, seed=0):
    model, loss, inputs, targets = make(batch_size + 1, device, dtype, seed)
    return model, loss, inputs, targets


def vector_loss(batch_size, device="cpu", dtype=torch.float32, seed=0):
    model, _, inputs, targets = make(batch_size, device, dtype, seed)
    return model, torch.nn.CrossEntropyLoss(reduction="none"), inputs, targets


def frozen(batch_size, device="cpu", dtype=torch.float32, seed=0):
    model, loss, inputs, targets = make(batch_size, device, dtype, seed)
    return model.requires_grad_(False), loss, inputs, targets


def float32_always(batch_size, device="cpu", dtype=torch.float32, seed=0):
    return make(batch_size, device, torch.float32, seed)


def not_a_module(batch_size, device="cpu", dtype=torch.float32, seed=0):
    return "model", None, None, None


def takes_one(n):
    return make(n)


NOT_A_FUNCTION = 3
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``usermodels``, a user's module in the current folder (not on sys.path: the spec finds it there, as python -m
    would)."""
    (tmp_path / "usermodels.py").write_text(textwrap.dedent(GOOD))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield "usermodels"
    sys.modules.pop("usermodels", None)
    w._resolve.cache_clear()


def test_a_module_function_in_the_current_folder_is_a_workload(user_module):
    model, loss_fn, inputs, targets = make_workload("usermodels:make", batch_size=4, dtype=torch.float64, seed=1)
    assert inputs.shape == (4, 6) and inputs.dtype == torch.float64 and loss_fn(model(inputs), targets).dim() == 0
    assert w.batch_sizes("usermodels:make") == (2, 5)


def test_a_workload_without_batch_sizes_gets_the_default(user_module):
    assert w.batch_sizes("usermodels:three") == w.DEFAULT_BATCH_SIZES == (1, 8, 64)
    assert w.batch_sizes("mlp") == (1, 64)


def test_a_function_that_raises_is_refused_in_one_line(user_module, tmp_path):
    (tmp_path / "raising.py").write_text("def make(batch_size, device, dtype, seed):\n    open('/no/such/file')\n")
    with pytest.raises(WorkloadError) as err:
        make_workload("raising:make", batch_size=2)
    assert str(err.value) == (
        "workload 'raising:make': calling it failed: FileNotFoundError: [Errno 2] No such file or directory: "
        "'/no/such/file'; fix the function"
    )


def test_a_missing_dependency_of_the_module_is_its_import_error(user_module, tmp_path):
    (tmp_path / "needs.py").write_text("import nosuchpackage\n")
    with pytest.raises(WorkloadError, match=r"importing needs failed: ModuleNotFoundError: No module named 'nosuch"):
        make_workload("needs:make", batch_size=2)


@pytest.mark.parametrize(
    "function, message",
    [
        ("three", "returned 3 values; return four: (model, loss_fn, inputs, targets)"),
        ("short", "its inputs are shape (5, 6) for batch_size=4; put the batch in the first dimension"),
        ("vector_loss", "its loss is shape (1,), not a scalar; take the mean over the batch (reduction='mean')"),
        ("frozen", "its model has no trainable parameter; set requires_grad=True"),
        ("not_a_module", "its model is a str; return a torch.nn.Module first"),
        ("takes_one", "takes (n); the contract is make(batch_size, device, dtype, seed)"),
        ("nope", "usermodels has no 'nope'; name a function defined there (make, three, short, "),
        ("NOT_A_FUNCTION", "is a int, not a function"),
    ],
)
def test_a_function_that_breaks_the_contract_is_refused_in_one_line(user_module, function, message):
    with pytest.raises(WorkloadError) as err:
        make_workload(f"usermodels:{function}", batch_size=4)
    assert str(err.value).startswith(f"workload 'usermodels:{function}'") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_model_not_cast_to_the_dtype_asked_for_is_refused(user_module):
    with pytest.raises(WorkloadError, match=r"its parameter '0.weight' is torch.float32, asked for torch.bfloat16"):
        make_workload("usermodels:float32_always", batch_size=2, dtype=torch.bfloat16)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nomodule:make", "no module 'nomodule' on sys.path or in "),
        ("usermodels:", "write MODULE:FUNCTION, e.g. mymodels:make"),
        ("", "a workload is a name or MODULE:FUNCTION"),
    ],
)
def test_a_spec_that_names_nothing_is_refused(user_module, spec, message):
    with pytest.raises(WorkloadError, match=message):
        make_workload(spec, batch_size=2)


def test_a_module_that_fails_to_import_says_its_error(user_module, tmp_path):
    (tmp_path / "broken.py").write_text("import torch\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(WorkloadError, match=r"importing broken failed: RuntimeError: no GPU here"):
        make_workload("broken:make", batch_size=2)


def entry(name, value):
    return importlib.metadata.EntryPoint(name, value, w.GROUP)


def test_a_registered_workload_is_found_by_name(user_module, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(tmp_path)  # where an installed package would be
    monkeypatch.setattr(
        w,
        "entry_points",
        lambda group: [entry("mine", "usermodels:make"), entry("mlp", "persample_core.workloads:mlp")],
    )
    assert w.names() == [*w.BUILT_IN, "mine"]
    assert make_workload("mine", batch_size=3).inputs.shape == (3, 6) and w.batch_sizes("mine") == (2, 5)


def test_a_registered_name_a_point_id_cannot_hold_is_refused(monkeypatch):
    monkeypatch.setattr(w, "entry_points", lambda group: [entry("my-model", "theirs:make")])
    with pytest.raises(WorkloadError, match=r"'my-model' \(theirs:make\) is not a name a point id can hold"):
        w.registered()


def test_a_registered_name_that_clashes_with_a_built_in_is_refused(monkeypatch):
    monkeypatch.setattr(w, "entry_points", lambda group: [entry("mlp", "theirs:make")])
    with pytest.raises(
        WorkloadError, match=r"workload 'mlp' registered by a package \(theirs:make\) clashes with the built-in"
    ):
        w.registered()


def test_the_built_ins_are_registered_in_the_entry_point_group():
    found = {e.name: e.value for e in importlib.metadata.entry_points(group=w.GROUP)}
    assert found == {name: f"persample_core.workloads:{name}" for name in w.BUILT_IN}


def test_resnet18_gn_is_torchvisions_resnet18_with_groupnorm_on_cifar():
    """11,181,642 parameters, as torchvision's resnet18(num_classes=10) has; GroupNorm wherever BatchNorm was."""
    model, _, inputs, targets = make_workload("resnet18_gn", batch_size=2)
    assert sum(p.numel() for p in model.parameters()) == 11_181_642
    assert inputs.shape == (2, 3, 32, 32) and model(inputs).shape == (2, 10)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 20 and not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_char_lstm_classifies_byte_sequences():
    model, loss_fn, inputs, targets = make_workload("char_lstm", batch_size=3)
    assert inputs.dtype == torch.int64 and inputs.shape == (3, 16) and model(inputs).shape == (3, 18)
    assert any(isinstance(m, torch.nn.LSTM) for m in model.modules())
