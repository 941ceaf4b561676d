"""Which hardware a run comes from, told without torch.

``HARDWARE_KEYS`` are the fields of a run's machine info that must agree
before two runs may be compared, and ``hardware_id`` names them in one
folder-safe string, since pytest-benchmark's own machine id (OS, Python, word
size) cannot tell two GPUs, or two CPU models, apart. The harness records the
GPU as torch sees it; ``this_hardware_id`` finds the same names through
``/proc/cpuinfo`` and ``nvidia-smi``, so that the gate can pick this machine's
runs without importing torch.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess

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


def nvidia_smi(*fields: str) -> list[list[str]]:
    """One row per GPU of ``nvidia-smi --query-gpu``; none where there is no NVIDIA driver."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [[cell.strip() for cell in line.split(",")] for line in out.splitlines() if line.strip()]


def _visible(gpus: list) -> list:
    """The GPUs CUDA shows this process: ``CUDA_VISIBLE_DEVICES`` by index, as torch would count them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return gpus
    chosen = [part.strip() for part in visible.split(",") if part.strip()]
    if not chosen or chosen[0].startswith("-"):
        return []
    if all(part.isdecimal() for part in chosen):
        return [gpus[int(part)] for part in chosen if int(part) < len(gpus)]
    return gpus[: len(chosen)]  # UUIDs or MIG names: as many as named


def this_machine() -> dict:
    """The ``HARDWARE_KEYS`` of this machine, as the harness records them."""
    gpus = _visible(nvidia_smi("name"))
    return {"cpu_model": cpu_model(), "gpu_name": gpus[0][0] if gpus else None, "gpu_count": len(gpus)}


def hardware_id(info: dict) -> str:
    """A folder-safe name for the hardware in ``info``, e.g. ``AMD_EPYC--no-gpu``."""
    gpu = f"{info['gpu_count']}x{info['gpu_name']}" if info.get("gpu_name") else "no-gpu"
    return "--".join(re.sub(r"[^A-Za-z0-9.-]+", "_", part).strip("_") for part in (info["cpu_model"], gpu))


def this_hardware_id() -> str:
    """``hardware_id`` of the machine this runs on."""
    return hardware_id(this_machine())


def hardware_differences(a: dict, b: dict) -> list[str]:
    """The hardware fields on which two machine infos disagree, as 'field: a != b'."""
    return [f"{key}: {a.get(key)!r} != {b.get(key)!r}" for key in HARDWARE_KEYS if a.get(key) != b.get(key)]
