"""Stored runs: find them, and refuse what cannot be compared.

Runs are pytest-benchmark JSON files (``--benchmark-autosave`` or
``--benchmark-json``) with their raw rounds, stored where pytest-benchmark
stores them, ``.benchmarks/<machine id>/NNNN_*.json``, so that its own tools
find them too. Its machine id names the OS and Python only: runs of several
machines can share a folder, and are told apart by the hardware each records
(``machine_info["persample"]["hardware_id"]``). Runs stored before 0.2, under
``.benchmarks/<hardware id>/<machine id>/``, are found as well. A run is named
by a path or by its saved id (``0003``, or a longer prefix of the file name).
Nothing here writes or deletes a file.
"""

from __future__ import annotations

import functools
from pathlib import Path

from persample_bench.runformat import (
    BASELINE,
    HistoryError,
    Run,
    hardware_differences,
    load,
    numerics_differences,
    read_json,
    setting_differences,
    this_hardware_id,
)

DEFAULT_STORAGE = Path(".benchmarks")


class NoBaseline(HistoryError):
    """There is nothing stored yet to compare against (a first run on this hardware)."""


class HardwareMismatch(HistoryError):
    """Two runs come from different hardware."""


@functools.lru_cache(maxsize=1024)
def _header(path: Path, changed: int) -> tuple[str, str | None, str | None]:
    """(when the run was made, its hardware id, its baseline) of a stored JSON file; ("", None, None) where it is
    no persample run. ``changed``: the file's mtime, so that a rewritten file is read again."""
    try:
        data = read_json(path)
        persample = (data.get("machine_info") or {}).get("persample")
        if persample is None:
            return str(data.get("datetime", "")), None, None
        return str(data.get("datetime", "")), persample.get("hardware_id"), persample.get("baseline", BASELINE)
    except (HistoryError, AttributeError):
        return "", None, None


def header(path: Path) -> tuple[str, str | None, str | None]:
    """(when, hardware id, baseline: ``Run.baseline``) of a stored run, read once per version of the file."""
    return _header(path, path.stat().st_mtime_ns)


def _oldest_first(path: Path):
    """When the run was made, then its saved number: runs from two folders (two layouts) fall in order."""
    return header(path)[0], path.name.split("_", 1)[0], str(path)


def stored(storage=DEFAULT_STORAGE, hardware_id: str | None = None) -> list[Path]:
    """Saved runs, oldest first, of one hardware or of all; in today's layout and the one before 0.2."""
    paths = [*Path(storage).glob("*/*.json"), *Path(storage).glob("*/*/*.json")]
    if hardware_id is not None:
        paths = [path for path in paths if header(path)[1] == hardware_id]
    return sorted(paths, key=_oldest_first)


def resolve(ref: str, storage=DEFAULT_STORAGE) -> Path:
    """A path as given, or the one saved run whose file name starts with ``ref``."""
    if ref.endswith(".json") or Path(ref).exists():
        return Path(ref)
    matches = [p for p in stored(storage) if p.name.startswith(ref)]
    if not matches:
        raise HistoryError(f"no saved run {ref!r} under {storage}; list them with: persample runs")
    if len(matches) > 1:
        raise HistoryError(
            f"saved run id {ref!r} is ambiguous under {storage}: "
            f"{', '.join(str(p) for p in matches)}; pass a path instead"
        )
    return matches[0]


def named_or_here(refs, storage=DEFAULT_STORAGE) -> list[Path]:
    """The runs ``refs`` name (saved ids or paths), or with none every run stored for this machine's hardware."""
    return [resolve(ref, storage) for ref in refs] if refs else stored(storage, this_hardware_id())


def latest_two(storage=DEFAULT_STORAGE, hardware_id: str | None = None) -> tuple[Path, Path]:
    """The newest run and the newest before it that times the same step (``before_of``), on one hardware."""
    runs = stored(storage, hardware_id)
    where = f"{storage} for {hardware_id}" if hardware_id else str(storage)
    if len(runs) < 2:
        raise NoBaseline(
            f"no baseline yet: {len(runs)} stored run(s) under {where}; this run becomes the baseline for the next one"
        )
    baseline = header(runs[-1])[2]
    previous = before_of(baseline, runs[:-1])
    if previous is None:
        raise NoBaseline(
            f"no baseline yet: of the {len(runs)} stored run(s) under {where}, none before the newest times "
            f"{STEPS.get(baseline, baseline)}; it becomes the baseline for the next one"
        )
    return previous, runs[-1]


# What a run's points time, by its baseline: runs of two kinds share no point and learn no noise from each other.
STEPS = {"loop": "per-sample gradients over the loop", "nonprivate": "the DP step over the non-private step"}


def before_of(baseline: str, paths) -> Path | None:
    """The newest of ``paths`` (oldest first) whose run times over ``baseline`` (``Run.baseline``: a dp sweep's run
    is judged against the dp run before it, not the mission run between them), read from the cached headers; None
    where none does. Unreadable runs are passed over."""
    return next((path for path in reversed(paths) if header(path)[2] == baseline), None)


class SettingsMismatch(HistoryError):
    """Two runs were timed differently (threads, clock)."""


class NumericsMismatch(SettingsMismatch):
    """Two runs computed with different numerics (dtype, TF32, matmul precision, cuDNN's choices)."""


def check_numerics(a: dict, b: dict, *, names: tuple[str, str]) -> None:
    """Refuse two machine infos (of runs, or of ``persample ab``'s sides, ``names``) whose numerics differ: their
    times are of different arithmetic, and no verdict on them would mean anything."""
    differences = numerics_differences(a, b)
    if differences:
        raise NumericsMismatch(
            f"{names[0]} and {names[1]} computed with different numerics ({'; '.join(differences)}); their times are "
            "of different arithmetic: rerun one of them with the other's settings"
        )


def check_comparable(a: Run, b: Run) -> None:
    """Refuse two runs of different hardware, computed with different numerics, of different kinds (``STEPS``), or
    timed with different threads, clocks or heaps."""
    differences = hardware_differences(a.machine, b.machine)
    if differences:
        raise HardwareMismatch(
            f"{a.name} and {b.name} come from different hardware ({'; '.join(differences)}); "
            "compare runs of one machine only"
        )
    check_numerics(a.machine, b.machine, names=(a.name, b.name))
    if a.baseline != b.baseline:
        raise SettingsMismatch(
            f"{a.name} times {STEPS.get(a.baseline, a.baseline)}, {b.name} {STEPS.get(b.baseline, b.baseline)}: they "
            "share no point; compare runs of one kind (the dp sweep's with the dp sweep's)"
        )
    settings = setting_differences(a.machine, b.machine)
    if settings:
        raise SettingsMismatch(
            f"{a.name} and {b.name} were timed differently ({'; '.join(settings)}); "
            "rerun the candidate with the baseline's --persample-threads, --persample-timer and --persample-heap"
        )


HISTORY_RUNS = 20  # the most stored runs the gate learns the noise between runs from


def preceding(baseline: Run, candidate: Run, most: int = HISTORY_RUNS) -> tuple[list[Run], list[Path]]:
    """The runs stored beside the baseline up to it (the candidate left out), timed like it, oldest first.

    At most the ``most`` newest. Also the paths that could not be read, which
    are left out (and left alone).
    """
    candidate_path = candidate.path.resolve()
    paths = [
        path
        for path in sorted(baseline.path.parent.glob("*.json"), key=_oldest_first)
        if path.resolve() != candidate_path
    ]
    names = [path.name for path in paths]
    if baseline.name in names:
        paths = paths[: names.index(baseline.name) + 1]
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
