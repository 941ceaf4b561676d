"""Numeric tolerance: how exact a computation in each precision can be, what a method's gradients are held to.

Used by the float64 reference check (``reference``) and by the guard on hook
methods (``guard``), which compares two computations in the method's own precision.
"""

from __future__ import annotations

import torch

# Relative error allowed for a computation in each precision. TF32 keeps a
# 10-bit mantissa (~1e-3 per product); float32 accumulates ~1e-7 per op.
TOLERANCES = {
    "float64": 1e-10,
    "float32": 1e-4,
    "tf32": 5e-3,
    "bfloat16": 5e-2,
    "float16": 1e-2,
}


def precision(dtype: torch.dtype, device) -> str:
    """The precision a float tensor of ``dtype`` is really multiplied in on ``device``."""
    name = str(dtype).removeprefix("torch.")
    if (
        dtype == torch.float32
        and torch.device(device).type == "cuda"
        and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
    ):
        return "tf32"
    return name
