"""What accelerator this machine has, in words: benchmark tools record the CPU but not the GPU."""
from __future__ import annotations

import torch


def gpu_name() -> str | None:
    """Name of the first CUDA device, with the count where there are several; None without CUDA.

    Initialises CUDA: call it from a tool's own process, never where a
    benchmark process will be forked afterwards.
    """
    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    return name if count == 1 else f"{count} x {name}"
