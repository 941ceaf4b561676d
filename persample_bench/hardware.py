"""What machine this is, as the measuring process sees it: recorded with every run.

``machine_info()`` holds the hardware (the fields ``persample_bench.runformat``
compares runs by), the software versions and the numerics settings of this
process. The GPU is named as torch names it.
"""

from __future__ import annotations

import os

import torch

from persample_bench.runformat import cpu_model, hardware_id, nvidia_smi


def gpu_name() -> str | None:
    """Name of the first CUDA device, with the count where there are several; None without CUDA.

    Initialises CUDA: call it from a tool's own process, never where a
    benchmark process will be forked afterwards (asv).
    """
    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    return name if count == 1 else f"{count} x {name}"


def machine_info() -> dict:
    """CPU, GPU, software versions and numerics settings of this process, and its ``hardware_id``.

    Initialises CUDA when it is present: call it in the measuring process, not
    where a later fork would inherit a CUDA context (asv's discovery).
    """
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "gpu_name": None,
        "gpu_count": 0,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        driver = nvidia_smi("driver_version")
        info.update(
            gpu_name=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_memory_bytes=props.total_memory,
            cudnn_version=torch.backends.cudnn.version(),
            driver_version=driver[0][0] if driver else None,
        )
    return {**info, "hardware_id": hardware_id(info)}
