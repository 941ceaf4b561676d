"""The run format: what the harness writes and the gate reads, in one module with no torch.

A run is pytest-benchmark JSON with the raw rounds of each point. This module
holds everything both sides must agree on to read one: what a point is and its
id, the names of the baseline and the floor, the hardware a run records and its
id, the settings that make two runs comparable and their values, and a worker's
exit codes. The harness (``persample_bench``) imports nothing of the gate
(``persample_gate``); the gate imports this module and ``persample_bench.summary``
only, and no torch (tests/test_layout.py holds both). What the speedup is taken
over (``baseline``) and the name of the floor come from the run itself, so a
reader never needs the methods' code.

The hardware: ``HARDWARE_KEYS`` are the fields of a run's machine info that
must agree before two runs may be compared, and ``hardware_id`` names them in
one folder-safe string, since pytest-benchmark's own machine id (OS, Python,
word size) cannot tell two GPUs, or two CPU models, apart. The harness records
the GPU as torch sees it (``persample_bench.hardware``); ``this_hardware_id``
finds the same names through ``/proc/cpuinfo`` and ``nvidia-smi``, so that the
gate can pick this machine's runs without importing torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# The method every speedup is over: persample_core.BASELINE, named here for readers without torch (the gate) and
# for runs stored before they recorded it (tests/test_layout.py holds the two equal).
BASELINE = "loop"
FLOOR = "floor"  # the name the floor's points carry: a matmul of the batch, the least a method could cost
# The DP-SGD step's points (persample_core.dp): method "dp_<DP method>" (dp_vmap, dp_ghost), timed against the
# non-private step, one batched forward and backward: their baseline, as the loop is the per-sample gradients'.
DP_PREFIX = "dp_"
NONPRIVATE = "nonprivate"


def is_dp(method: str) -> bool:
    """Whether ``method`` names a point of the DP step (a DP method's, or the non-private step's)."""
    return method.startswith(DP_PREFIX) or method == NONPRIVATE


def baseline_of(method: str) -> str:
    """What a point of ``method`` is timed against: the non-private step for the DP step's, else the loop."""
    return NONPRIVATE if is_dp(method) else BASELINE


# A measuring worker's exit status (persample_bench.worker), with one line on stderr:
REFUSED = 2  # a request it cannot measure (a bad sweep, clock or point)
UNUSABLE = 3  # code it cannot run: no torch in its Python, or a persample_core without what it needs

# The pytest options' group, which both pytest plugins add to (persample_bench.plugin, persample_gate.pytest_plugin).
OPTIONS_GROUP = ("persample", "persample: per-sample gradient benchmarks")

# The values a run's timer and heap policy take, for the gate's options (tests/test_layout.py holds them equal to
# the harness's own, which import torch).
TIMERS = ("wall", "cpu")  # persample_bench.timing.CLOCKS
HEAPS = ("kept", "system")  # persample_bench.memory.HEAP_POLICIES
# The heap policy unless an option says otherwise: glibc keeps freed memory. On the system allocator a process's
# speedup depends on what it allocated before (glibc's sliding mmap threshold): six processes of unchanged code
# gave 1.42-3.25x at simple_cnn B=8, and gated against each other with too little history one in fifteen pairs
# was called a regression (docs/studies/2026-12-04-threshold-rule.md). The default job prints what the tutorial's
# code gives a user beside its own figure instead (persample_bench.crosscheck.plain_speedups).
DEFAULT_HEAP = "kept"
# How a run is timed, as its machine info records it: two runs compare only where these agree. A run that does not
# say used the value here (runs stored before the setting was recorded).
COMPARED_SETTINGS = {"torch_threads": None, "timer": "wall", "heap_policy": "kept"}


# What a run computes with, as its machine info records it (persample_bench.hardware.numerics): two runs that differ
# in any are refused, since they time different arithmetic (on a GPU, TF32 or a lower matmul precision changes a
# time several-fold). A run that does not say used the value here, torch's default. A point's dtype is in its id:
# points in two dtypes are two points, never compared with each other.
NUMERICS = {
    "tf32_matmul": False,
    "tf32_cudnn": True,
    "float32_matmul_precision": "highest",
    "cudnn_benchmark": False,
    "cudnn_deterministic": False,
}
# The software a run was timed on: runs that differ only in these are compared, since comparing torch builds is one
# of the suite's uses, and the comparison says in one line that its change includes theirs (``software_changes``).
SOFTWARE = {"torch_version": "torch", "cuda_version": "CUDA", "cudnn_version": "cuDNN", "driver_version": "driver"}


def _differences(a: dict, b: dict, defaults: dict) -> list[str]:
    return [
        f"{key}: {a.get(key, default)!r} != {b.get(key, default)!r}"
        for key, default in defaults.items()
        if a.get(key, default) != b.get(key, default)
    ]


def setting_differences(a: dict, b: dict) -> list[str]:
    """The ``COMPARED_SETTINGS`` on which two machine infos disagree, as 'setting: a != b'."""
    return _differences(a, b, COMPARED_SETTINGS)


def numerics_differences(a: dict, b: dict) -> list[str]:
    """The ``NUMERICS`` on which two machine infos disagree, as 'setting: a != b'."""
    return _differences(a, b, NUMERICS)


def software_changes(a: dict, b: dict) -> str | None:
    """One line on the ``SOFTWARE`` that differs from machine info ``a`` to ``b``, e.g. "torch 2.12.0+cpu ->
    2.13.0+cpu: the change includes torch's"; None where it is the same."""
    changed = [(name, a.get(key), b.get(key)) for key, name in SOFTWARE.items() if a.get(key) != b.get(key)]
    if not changed:
        return None
    whose = f"{changed[0][0]}'s" if len(changed) == 1 else "theirs"
    return ", ".join(f"{name} {old} -> {new}" for name, old, new in changed) + f": the change includes {whose}"


def positive(text: str) -> float:
    """A command line's positive number (a precision, a time cap, seconds), or argparse's error naming it."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def batch_sizes(text: str) -> tuple:
    """A command line's batch sizes, ``"1,8,64"``, sorted, or argparse's error naming them."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdecimal() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of batch sizes; write positive whole numbers, e.g. 8,32"
        )
    return tuple(sorted({int(part) for part in parts}))


class HistoryError(Exception):
    """A run cannot be used; the message names the file and what to do."""


DEFAULT_DTYPE = "float32"  # a point's dtype where its id and extra_info name none (every run stored before the axis)
DTYPES = ("float32", "bfloat16", "float16")  # the dtype axis: the model and its floating inputs cast to it


@dataclass(frozen=True, order=True)
class Point:
    """One measurement: a method on a workload at a batch size on a device, in a dtype. The workload is a spec:
    a name, or ``MODULE:FUNCTION`` (persample_core.workloads)."""

    workload: str
    method: str
    batch_size: int
    device: str
    dtype: str = DEFAULT_DTYPE

    @property
    def id(self) -> str:
        """``workload-method-B<batch>-device``, and ``-dtype`` where it is not float32 (so float32 ids stay as they
        were before the dtype axis, and the history goes on)."""
        return f"{self.workload}-{self.method}-B{self.batch_size}-{self.where}"

    @property
    def where(self) -> str:
        """What a method's points are pooled over besides the method: the device, and the dtype where it is not
        float32 (``cpu``, ``cuda-bfloat16``)."""
        return self.device if self.dtype == DEFAULT_DTYPE else f"{self.device}-{self.dtype}"

    @classmethod
    def of(cls, info: dict) -> Point:
        """The point a benchmark's ``extra_info`` (``POINT_FIELDS``) names."""
        return cls(*(info[name] for name in POINT_FIELDS), info.get("dtype", DEFAULT_DTYPE))

    @property
    def fields(self) -> list:
        """The point as a JSON list, as a worker's request and answer carry it."""
        return [self.workload, self.method, self.batch_size, self.device, self.dtype]


POINT_FIELDS = ("workload", "method", "batch_size", "device")  # in a stored benchmark's extra_info, with "dtype"


@dataclass
class Run:
    """One stored run: where it came from, its machine and its samples per point."""

    path: Path
    machine: dict  # the harness's machine_info (machine_info["persample"] in the JSON)
    commit: str
    samples: dict  # Point -> list of seconds per round
    baseline_rounds: dict  # Point -> the baseline's seconds in the same rounds, where interleaved
    extra: dict = field(default_factory=dict)  # Point -> the benchmark's extra_info
    time: str = ""  # when it was run (ISO 8601)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def id(self) -> str:
        """The saved id (``0003`` of pytest-benchmark's ``0003_<commit>_<date>.json``), or the file's stem."""
        return self.path.stem.split("_", 1)[0]

    @property
    def baseline(self) -> str:
        """The method every speedup in this run is taken over."""
        return self.machine.get("baseline", BASELINE)

    @property
    def floor(self) -> str:
        """The name the floor's points carry in this run."""
        return self.machine.get("floor", FLOOR)


def read_json(path: Path) -> dict:
    """A JSON file, or a HistoryError naming it and what is wrong with it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HistoryError(
            f"{path}: no such file; pass a saved run id or the path of a pytest-benchmark JSON file"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise HistoryError(f"{path}: cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise HistoryError(
            f"{path}: truncated or corrupt JSON ({err.msg} at line {err.lineno}); "
            "re-run the benchmark to store a new run"
        ) from None


def load(path) -> Run:
    path = Path(path)
    data = read_json(path)
    try:
        machine = data["machine_info"]["persample"]
        samples, baseline, extra = {}, {}, {}
        for bench in data["benchmarks"]:
            info = bench["extra_info"]
            point = Point.of(info)
            samples[point], extra[point] = bench["stats"]["data"], info
            if "baseline_rounds" in info:
                baseline[point] = info["baseline_rounds"]
    except (KeyError, TypeError) as err:
        raise HistoryError(
            f"{path}: not a persample run with raw rounds (missing {err}); "
            "store runs with this project's suite (tox -e bench)"
        ) from None
    if not samples:
        raise HistoryError(f"{path}: holds no timed benchmarks (a --benchmark-disable run?)")
    return Run(
        path,
        machine,
        (data.get("commit_info") or {}).get("id", "?"),
        samples,
        baseline,
        extra,
        data.get("datetime", ""),
    )


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


def visible(gpus: list) -> list:
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
    gpus = visible(nvidia_smi("name"))
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
