import pytest
import torch

from persample_core import MethodUnavailable

CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
)
DEVICES = ["cpu", CUDA]


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def seed(request):
    """Fresh weights and data: each seed builds a different workload."""
    return request.param


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """A method that cannot run here (an optional package missing, a layer it does not
    support) is skipped with its reason, in every test, rather than failed."""
    try:
        return (yield)
    except MethodUnavailable as err:
        pytest.skip(f"{err}")
