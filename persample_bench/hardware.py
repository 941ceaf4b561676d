"""What machine this is, as the measuring process sees it: recorded with every run.

``machine_info()`` holds the hardware (the fields ``persample_bench.runformat``
compares runs by), the software versions, the numerics settings of this
process (``NUMERICS``: runs that differ in them are not compared) and the CUDA
devices the run uses, with their clocks and power limit where ``nvidia-smi``
tells them. The GPU is named as torch names it.
"""

from __future__ import annotations

import os

import torch

from persample_bench.runformat import cpu_model, hardware_id, nvidia_smi, visible


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


def fix_numerics() -> None:
    """Set what the suite fixes rather than inherits from whatever ran before it in the process: cuDNN chooses its
    kernels by its heuristics (``benchmark`` off) and may use non-deterministic ones (``deterministic`` off), as a
    plain torch program does by default. Autotuning (``benchmark`` on) would time trial kernels within the
    warm-up and may choose differently from one process to the next. Applied before every point is built
    (``prepare.prepare_point``); recorded by ``numerics``."""
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = False


def numerics() -> dict:
    """What this process computes with (``runformat.NUMERICS``: runs that differ in any are not compared)."""
    return {
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
    }


# What nvidia-smi tells of a card's settings (its names: --help-query-gpu): the most and the application clocks and
# the power limit. Not the current clocks: the run reads them when the card is idle, which says nothing of the timing.
GPU_STATE = ("clocks.max.sm", "clocks.max.mem", "clocks.applications.graphics", "clocks.applications.memory",
             "power.limit")  # fmt: skip


def cuda_devices(devices) -> dict:
    """``{device: {"name", and what nvidia-smi says of its clocks and power limit}}`` of the CUDA devices among
    ``devices`` (``cuda`` is the current one); {} without CUDA."""
    chosen = {torch.device(device) for device in devices}
    if not torch.cuda.is_available() or not any(device.type == "cuda" for device in chosen):
        return {}
    rows = visible(nvidia_smi("name", *GPU_STATE))
    found = {}
    for device in sorted(chosen, key=str):
        if device.type != "cuda":
            continue
        index = torch.cuda.current_device() if device.index is None else device.index
        name = torch.cuda.get_device_name(index)
        # nvidia-smi counts cards in PCI order, CUDA fastest first by default: a row is this card's only by its name.
        row = rows[index] if index < len(rows) and rows[index][0] == name else []
        found[f"cuda:{index}"] = {"name": name, **dict(zip(GPU_STATE, row[1:]))}
    return found


def machine_info(devices=("cpu",)) -> dict:
    """CPU, GPU, software versions and numerics settings of this process, the CUDA devices among ``devices`` (the
    run's), and its ``hardware_id``.

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
        **numerics(),
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
            cuda_devices=cuda_devices(devices),
        )
    return {**info, "hardware_id": hardware_id(info)}
