"""Peak memory of one call, on CUDA and on the CPU; and a heap that keeps what is freed.

CUDA: ``max_memory_allocated`` after resetting the peak, less what was
allocated before the call: the tensors the call itself needed. CPU: the
process's peak resident set (VmHWM), reset through ``/proc/self/clear_refs``
(Linux), less the resident set before the call; freed heap is first handed
back to the OS (glibc's ``malloc_trim``), or memory kept from the warm-up would
hide the call's own. Either is compared with the
least any method needs, the B x P per-sample gradient floats.

Timed calls on the CPU run on a heap that keeps freed memory
(``keep_freed_memory``): glibc hands every block over 32 MB straight back to
the OS when it is freed, so each call that makes B x P gradients would fault
its pages in afresh. That can take most of the call, for as long as the
state of the host decides, not the method: the noise it adds between runs is
measured in docs/studies/2026-11-28-noise-sources.md. Keeping the heap is
what torch's own CPU launcher does with jemalloc or tcmalloc
(``python -m torch.backends.xeon.run_cpu``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import re
from pathlib import Path

import torch

from persample_bench import timing  # timing.asynchronous looked up at each call: the tests' seam

_STATUS, _MEMINFO = Path("/proc/self/status"), Path("/proc/meminfo")


def _kibibytes(path: Path, field: str) -> int:
    """A ``field: N kB`` line of a /proc file, in bytes."""
    return int(re.search(rf"^{field}:\s+(\d+) kB", path.read_text(), re.MULTILINE).group(1)) * 1024


def _status_bytes(field: str) -> int:
    return _kibibytes(_STATUS, field)


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEPT = "glibc heap keeps freed memory (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)"
SYSTEM = "system allocator as it is"


@functools.cache
def _libc():
    """glibc, or None on a C library without its malloc extensions (macOS, musl).

    Looked up once per process: ``find_library`` runs ldconfig in a
    subprocess, and every point's preparation and peak-memory measurement asks.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _trim_heap() -> None:
    libc = _libc()
    if libc is not None:  # elsewhere the figure may undercount, never overcount
        libc.malloc_trim(0)


def keep_freed_memory() -> str:
    """Serve every allocation from the heap and keep what is freed, for this process; says what it did.

    After the warm-up, a timed call then reuses memory instead of faulting
    fresh pages in. ``peak_bytes`` still sees a call's own memory: it hands the
    freed heap back first. Made before every point, not once per process:
    mallopt is cheap, and the setting must hold whatever ran earlier in the
    process (made once at start-up, it did not survive a ``vmap_compiled``
    point: docs/studies/2026-11-28-noise-sources.md). A prepared point's calls
    fault no fresh pages: ``test_a_prepared_point_runs_on_the_kept_heap_without_fresh_pages``
    in tests/test_suite.py.
    """
    libc = _libc()
    if libc is None or not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
        return SYSTEM
    return KEPT


KEPT_HEAP, SYSTEM_HEAP = "kept", "system"
# A run's choice (--persample-heap; ab's and sensitivity's --heap): the kept heap makes a call's time the method's
# own, not the host's paging; the system allocator is what a plain torch program (the tutorial) runs on.
# docs/measuring.md compares the two.
HEAP_POLICIES = (KEPT_HEAP, SYSTEM_HEAP)


def apply_heap_policy(policy: str) -> str:
    """Put this process under ``policy`` (one of ``HEAP_POLICIES``); says what that means here.

    ``system`` leaves the allocator alone. It cannot undo ``kept`` in the same
    process: a run keeps one policy throughout.
    """
    if policy not in HEAP_POLICIES:
        raise ValueError(f"unknown heap policy {policy!r}; choose one of: {', '.join(HEAP_POLICIES)}")
    return keep_freed_memory() if policy == KEPT_HEAP else SYSTEM


def cpu_peak_supported() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmHWM") > 0
    except (OSError, AttributeError):
        return False


def peak_bytes(fn, device) -> int | None:
    """Memory ``fn()`` needed at its peak beyond what was in use before; None where it cannot be measured."""
    if timing.asynchronous(device):  # CUDA: the allocator's counters, once the queued work is done
        timing.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        timing.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    _trim_heap()
    if not cpu_peak_supported():
        return None
    before = _status_bytes("VmRSS")
    fn()
    return max(0, _status_bytes("VmHWM") - before)


def free_and_total(device) -> tuple[int, int] | None:
    """(bytes free, bytes in all) of ``device``'s memory: the GPU's, or the machine's available memory; None where
    /proc cannot tell."""
    if timing.asynchronous(device):
        return torch.cuda.mem_get_info(device)
    try:
        return _kibibytes(_MEMINFO, "MemAvailable"), _kibibytes(_MEMINFO, "MemTotal")
    except (OSError, AttributeError):
        return None


class WouldNotFit(ValueError):
    """A point whose B x P per-sample gradients alone would not fit in its device's free memory: skipped saying so,
    never attempted (the attempt could take the machine's memory from everything else on it)."""


def reusable(device) -> tuple[int, int] | None:
    """``free_and_total``, with what this process holds freed counted as free: the CUDA caching allocator's
    reserved but unused bytes; on the CPU, the kept heap handed back first (``_trim_heap``)."""
    if timing.asynchronous(device):
        free, total = free_and_total(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device), total
    _trim_heap()
    return free_and_total(device)


def check_fits(point, gradient_bytes: int) -> None:
    """Raise ``WouldNotFit`` where ``gradient_bytes``, the least any method (and the floor) needs at ``point``,
    exceed the memory its device could give (``reusable``); nothing where it cannot be told."""
    device = torch.device(point.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    memory = reusable(device)
    if memory is not None and gradient_bytes > memory[0]:
        raise WouldNotFit(
            f"{point.id}: its B x P per-sample gradients need {gradient_bytes / 2**30:.1f} GiB and {device} has "
            f"{memory[0] / 2**30:.1f} GiB free of {memory[1] / 2**30:.0f}; skipped, not attempted"
        )


def out_of_memory(point, error: str) -> str:
    """A point that ran out of memory (``error``: the error's first line), in one line, called once what it held is
    let go; a GPU's cache is emptied first, so that the next point starts clean and the free memory said is what
    it has: "out of memory at B=512 on cuda:0 (3.1 GiB free of 80): ..."."""
    device = torch.device(point.device)
    gc.collect()  # what reference cycles of the failed call's frames still hold
    try:
        if timing.asynchronous(device):
            torch.cuda.empty_cache()
            device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        memory = free_and_total(device)
    except RuntimeError:  # a CUDA error that outlived the one that ran out: the skip, without the figure
        memory = None
    free = "" if memory is None else f" ({memory[0] / 2**30:.1f} GiB free of {memory[1] / 2**30:.0f})"
    return f"out of memory at B={point.batch_size} on {device}{free}: {error}"
