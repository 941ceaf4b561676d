import pytest
import torch

CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
)
DEVICES = ["cpu", CUDA]


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def seed(request):
    """Fresh weights and data: each seed builds a different workload."""
    return request.param

pytest_plugins = ["tests.benchmark_plugin"]
