"""The run data both sides agree on: what a point is, and a stored run read back.

The harness (``persample_bench``) writes runs as pytest-benchmark JSON with
their raw rounds; everything else here only reads them, with no torch. What
the speedup is taken over (``baseline``) and the name of the floor come from
the run itself, so a reader never needs the methods' code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# What a run says when it does not say (runs stored before these were recorded).
BASELINE = "loop"
FLOOR = "floor"


class HistoryError(Exception):
    """A run cannot be used; the message names the file and what to do."""


@dataclass(frozen=True, order=True)
class Point:
    """One measurement: a method on a workload at a batch size on a device."""

    workload: str
    method: str
    batch_size: int
    device: str

    @property
    def id(self) -> str:
        return f"{self.workload}-{self.method}-B{self.batch_size}-{self.device}"


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
            point = Point(info["workload"], info["method"], info["batch_size"], info["device"])
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
