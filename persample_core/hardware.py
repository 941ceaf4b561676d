"""What machine this is: the facts that make two timings comparable or not.

``machine_info()`` is recorded with every run. ``HARDWARE_KEYS`` are the fields
that must agree before two runs may be compared, and ``hardware_id`` names a
storage folder after them, since pytest-benchmark's own machine id (OS, Python,
word size) cannot tell two GPUs, or two CPU models, apart.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess

import torch

HARDWARE_KEYS = ("cpu_model", "gpu_name", "gpu_count")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


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
    """CPU, GPU, software versions and numerics settings of this process.

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
        info.update(
            gpu_name=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_memory_bytes=props.total_memory,
            cudnn_version=torch.backends.cudnn.version(),
            driver_version=_nvidia_driver(),
        )
    return info


def hardware_id(info: dict) -> str:
    """A folder-safe name for the hardware in ``info``, e.g. ``AMD_EPYC--no-gpu``."""
    gpu = f"{info['gpu_count']}x{info['gpu_name']}" if info.get("gpu_name") else "no-gpu"
    return "--".join(re.sub(r"[^A-Za-z0-9.-]+", "_", part).strip("_") for part in (info["cpu_model"], gpu))


def this_hardware_id() -> str:
    """``hardware_id`` of the machine this runs on."""
    return hardware_id(machine_info())


def hardware_differences(a: dict, b: dict) -> list[str]:
    """The hardware fields on which two machine_info dicts disagree, as 'field: a != b'."""
    return [f"{key}: {a.get(key)!r} != {b.get(key)!r}" for key in HARDWARE_KEYS if a.get(key) != b.get(key)]
