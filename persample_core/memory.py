"""Peak memory of one call, on CUDA and on the CPU.

CUDA: ``max_memory_allocated`` after resetting the peak, less what was
allocated before the call: the tensors the call itself needed. CPU: the
process's peak resident set (VmHWM), reset through ``/proc/self/clear_refs``
(Linux), less the resident set before the call; freed heap is first handed
back to the OS (glibc's ``malloc_trim``), or memory kept from the warm-up would
hide the call's own. Either is compared with the
least any method needs, the B x P per-sample gradient floats.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import re
from pathlib import Path

import torch

from persample_core.timing import synchronize

_STATUS = Path("/proc/self/status")


def _status_bytes(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE).group(1)) * 1024


def _trim_heap() -> None:
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the figure may then undercount, never overcount


def cpu_peak_supported() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmHWM") > 0
    except (OSError, AttributeError):
        return False


def peak_bytes(fn, device) -> int | None:
    """Memory ``fn()`` needed at its peak beyond what was in use before; None where it cannot be measured."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    _trim_heap()
    if not cpu_peak_supported():
        return None
    before = _status_bytes("VmRSS")
    fn()
    return max(0, _status_bytes("VmHWM") - before)
