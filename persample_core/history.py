"""Stored runs: find them, read them, and refuse what cannot be compared.

Runs are pytest-benchmark JSON files (``--benchmark-autosave`` or
``--benchmark-json``), stored under ``.benchmarks/<hardware id>/<machine id>/``
with their raw rounds. A run is named by a path or by its saved id (``0003``, or
a longer prefix of the file name). Nothing here writes or deletes a file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from persample_core.grid import Point
from persample_core.hardware import hardware_differences, this_hardware_id

DEFAULT_STORAGE = Path(".benchmarks")


class HistoryError(Exception):
    """A run cannot be used; the message names the file and what to do."""


class NoBaseline(HistoryError):
    """There is nothing stored yet to compare against (a first run on this hardware)."""


class HardwareMismatch(HistoryError):
    """Two runs come from different hardware."""


@dataclass
class Run:
    """One stored run: where it came from, its machine and its samples per point."""

    path: Path
    machine: dict  # persample's machine_info
    commit: str
    samples: dict  # Point -> list of seconds per round
    baseline_rounds: dict  # Point -> the loop's seconds in the same rounds, where interleaved
    extra: dict = field(default_factory=dict)  # Point -> the benchmark's extra_info
    time: str = ""  # when it was run (ISO 8601)

    @property
    def name(self) -> str:
        return self.path.name


def load(path) -> Run:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HistoryError(f"{path}: no such file; pass a saved run id or the path of a pytest-benchmark JSON file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise HistoryError(f"{path}: cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise HistoryError(f"{path}: truncated or corrupt JSON ({err.msg} at line {err.lineno}); "
                           "re-run the benchmark to store a new run") from None
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
        raise HistoryError(f"{path}: not a persample run with raw rounds (missing {err}); "
                           "store runs with this project's suite (tox -e bench)") from None
    if not samples:
        raise HistoryError(f"{path}: holds no timed benchmarks (a --benchmark-disable run?)")
    return Run(path, machine, (data.get("commit_info") or {}).get("id", "?"), samples, baseline, extra,
               data.get("datetime", ""))


def _oldest_first(path: Path):
    return path.name.split("_", 1)[0], str(path)


def stored(storage=DEFAULT_STORAGE, hardware_id: str | None = None) -> list[Path]:
    """Saved runs, oldest first (pytest-benchmark numbers them), for one hardware or all."""
    pattern = f"{hardware_id}/*/*.json" if hardware_id else "**/*.json"
    return sorted(Path(storage).glob(pattern), key=_oldest_first)


def resolve(ref: str, storage=DEFAULT_STORAGE) -> Path:
    """A path as given, or the one saved run whose file name starts with ``ref``."""
    if ref.endswith(".json") or Path(ref).exists():
        return Path(ref)
    matches = [p for p in stored(storage) if p.name.startswith(ref)]
    if not matches:
        raise HistoryError(f"no saved run {ref!r} under {storage}; list them with: persample runs")
    if len(matches) > 1:
        raise HistoryError(f"saved run id {ref!r} is ambiguous under {storage}: "
                           f"{', '.join(str(p) for p in matches)}; pass a path instead")
    return matches[0]


def named_or_here(refs, storage=DEFAULT_STORAGE) -> list[Path]:
    """The runs ``refs`` name (saved ids or paths), or with none every run stored for this machine's hardware."""
    return [resolve(ref, storage) for ref in refs] if refs else stored(storage, this_hardware_id())


def latest_two(storage=DEFAULT_STORAGE, hardware_id: str | None = None) -> tuple[Path, Path]:
    """The newest run and the one before it, on one hardware."""
    runs = stored(storage, hardware_id)
    if len(runs) < 2:
        where = f"{storage}/{hardware_id}" if hardware_id else str(storage)
        raise NoBaseline(f"no baseline yet: {len(runs)} stored run(s) under {where}; "
                         "this run becomes the baseline for the next one")
    return runs[-2], runs[-1]


# How a run was timed; runs stored before the timer was recorded used the wall clock.
SETTINGS = {"torch_threads": None, "timer": "wall"}


class SettingsMismatch(HistoryError):
    """Two runs were timed differently (threads, clock)."""


def check_comparable(a: Run, b: Run) -> None:
    """Refuse two runs of different hardware, or timed with different threads or clocks."""
    differences = hardware_differences(a.machine, b.machine)
    if differences:
        raise HardwareMismatch(f"{a.name} and {b.name} come from different hardware ({'; '.join(differences)}); "
                               "compare runs of one machine only")
    settings = [f"{key}: {a.machine.get(key, default)!r} != {b.machine.get(key, default)!r}"
                for key, default in SETTINGS.items() if a.machine.get(key, default) != b.machine.get(key, default)]
    if settings:
        raise SettingsMismatch(f"{a.name} and {b.name} were timed differently ({'; '.join(settings)}); "
                               "rerun the candidate with the baseline's --threads and --timer")


HISTORY_RUNS = 20  # the most stored runs the gate learns the noise between runs from


def preceding(baseline: Run, candidate: Run, most: int = HISTORY_RUNS) -> tuple[list[Run], list[Path]]:
    """The runs stored beside the baseline up to it (the candidate left out), timed like it, oldest first.

    At most the ``most`` newest. Also the paths that could not be read, which
    are left out (and left alone).
    """
    candidate_path = candidate.path.resolve()
    paths = [path for path in sorted(baseline.path.parent.glob("*.json"), key=_oldest_first)
             if path.resolve() != candidate_path]
    names = [path.name for path in paths]
    if baseline.name in names:
        paths = paths[:names.index(baseline.name) + 1]
    runs, unreadable = [], []
    for path in paths[-most:]:
        try:
            run = baseline if path.name == baseline.name else load(path)
            check_comparable(baseline, run)
        except (HardwareMismatch, SettingsMismatch):
            continue  # another machine's or another setting's run: its spread is not this one's
        except HistoryError:
            unreadable.append(path)
            continue
        runs.append(run)
    return runs, unreadable
