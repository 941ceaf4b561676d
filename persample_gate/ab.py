"""A/B: a baseline and a candidate measured side by side now, in pairs of processes taking turns, judged on the
spread between pairs measured in the same run.

``persample ab REF`` takes the baseline's ``persample_core`` from git (``REF``,
extracted with ``git archive`` into a temporary folder) and the candidate's
from the working tree; ``--baseline-python PATH`` runs the baseline in another
environment (another torch). Either way the code that times is today's
harness (``persample_bench``, installed beside this module) on both
sides: only the code under test differs, as asv times an old commit's package
with today's benchmarks.

The sides are measured in pairs of processes (``persample_bench.worker
--serve``), one A and one B alive together, taking turns: every point is timed
in slices of a fraction of a second, A then B, then B then A, until each side
has had its seconds at every point. The machine's speed wanders by several
per cent over seconds on a shared host; both processes of a pair see the same
wandering, so the pair's difference (B's log median over its slices less A's,
per point and metric: the speedup, the method's time, the loop's time) is
largely free of it, where two processes run one after the other are not. The
pairs are independent repetitions, each in fresh processes, so the spread of their
differences holds everything that changes between processes; the change is
tested with the paired Student's t on it (pairs - 1 degrees of freedom). A
method is also judged on all its points together (their geometric mean: each
pair's mean over the points, tested the same way), and every row's p is
adjusted for all the rows (``gate.judge``), as the history gate does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from scipy import stats

from persample_bench.runformat import (
    BASELINE,
    DEFAULT_DTYPE,
    DTYPES,
    NONPRIVATE,
    HistoryError,
    Point,
    baseline_of,
    hardware_differences,
)
from persample_gate import gate, workers
from persample_gate.history import HardwareMismatch, check_numerics

# The mission's pair where it is resolved best on a shared CPU: cheap rounds (many of them in a slice) on three
# architectures (docs/studies/2026-12-03-ab.md).
DEFAULT_POINTS = (
    Point("simple_cnn", "vmap", 8, "cpu"),
    Point("simple_cnn", "vmap", 32, "cpu"),
    Point("mlp", "vmap", 64, "cpu"),
    Point("tiny_transformer", "vmap", 64, "cpu"),
)
DEFAULT_PAIRS = 8
DEFAULT_SECONDS = 1.6  # each point, in each process
SLICE = 0.4  # seconds of a turn: the machine's speed drifts over seconds (docs/studies/2026-12-03-ab.md)
# The speedup's threshold, the estimated slowdown that counts: pairs taking turns measure a 5% slowdown of vmap
# within about a point, where runs stored apart cannot, so 3% catches it every time and a 3% one most times; the
# false-alarm bound is alpha's, whatever the threshold (docs/studies/2026-12-04-threshold-rule.md).
THRESHOLD_RATIO = 0.03
WORKLOAD_BATCH_SIZES = (8, 32)  # --workload's points: cheap rounds, many to a slice, as the default points
POINT_ID = re.compile(
    rf"^(?P<workload>[^-]+)-(?P<method>[^-]+)-B(?P<batch>\d+)-(?P<device>[^-]+)(?:-(?P<dtype>{'|'.join(DTYPES)}))?$"
)
TEST_SLOWDOWN = "PERSAMPLE_TEST_SLOWDOWN"  # tests and studies only: the candidate's method does this much more work


class NoGit(HistoryError):
    """The baseline's git ref cannot be had: no repository here, or no such ref."""


class BaselineUnusable(HistoryError):
    """A side cannot be run by today's harness (its persample_core lacks names, its Python lacks torch)."""


def parse_point(text: str) -> Point:
    """``mlp-vmap-B64-cpu`` as a Point; one line saying the form where it is not one."""
    match = POINT_ID.match(text)
    if not match:
        raise HistoryError(f"{text!r} is not a point id; write workload-method-B<batch>-device, e.g. mlp-vmap-B64-cpu")
    if match["method"] in (BASELINE, NONPRIVATE):
        raise HistoryError(f"{text}: the {match['method']} is what its points are timed against; name another method")
    return Point(
        match["workload"], match["method"], int(match["batch"]), match["device"], match["dtype"] or DEFAULT_DTYPE
    )


def resolves_specs(side: Side) -> bool:
    """Whether the side's persample_core names workloads by spec (``persample_core.workloads.resolve``), read from
    its source: this process imports no torch, so none of that package."""
    source = side.core / "persample_core" / "workloads.py"
    return source.is_file() and "\ndef resolve(" in source.read_text()


def workload_points(specs, batch_sizes) -> list[Point]:
    """``--workload``'s points: vmap against the loop on the cpu, at each batch size of each workload. The spec is
    resolved by the workers (this process imports no torch), which refuse one that does not load, in one line."""
    for spec in specs:
        if "-" in spec:
            raise HistoryError(f"workload {spec!r}: a point id cannot hold '-'; name the module and function without")
    return [Point(spec, "vmap", batch_size, "cpu") for spec in specs for batch_size in batch_sizes]


def _git(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, **kw)


def repository(start: Path) -> Path | None:
    """The git work tree ``start`` lies in, or None."""
    done = _git(start, "rev-parse", "--show-toplevel", text=True)
    return Path(done.stdout.strip()) if done.returncode == 0 else None


def extract(repo: Path | None, ref: str, into: Path) -> str:
    """``persample_core`` as it is at ``ref``, written under ``into``; the commit ``ref`` names."""
    if repo is None:
        raise NoGit(
            f"{Path.cwd()} is not in a git repository, so there is no {ref!r} to measure; run persample ab from a "
            "clone, or compare two environments with --baseline-python alone"
        )
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", text=True)
    if done.returncode != 0:
        raise NoGit(f"no commit {ref!r} in {repo}; name a branch, tag or commit (git log --oneline lists them)")
    commit = done.stdout.strip()
    if _git(repo, "cat-file", "-e", f"{commit}:persample_core/__init__.py").returncode != 0:
        raise BaselineUnusable(f"{ref} ({commit[:10]}) has no persample_core package; name a later commit")
    archive = _git(repo, "archive", "--format=tar", commit, "persample_core")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return commit


def candidate_core(repo: Path | None) -> Path:
    """The candidate's ``persample_core``: the working tree's, else the one this environment imports."""
    if repo is not None and (repo / "persample_core" / "__init__.py").is_file():
        return repo / "persample_core"
    spec = find_spec("persample_core")  # located, not imported: no torch here
    if spec is None or spec.origin is None:
        raise BaselineUnusable("no persample_core here: run persample ab from a clone, or install persample-core")
    return Path(spec.origin).parent


def todays_harness() -> Path:
    """Today's ``persample_bench``: the package installed beside this one."""
    return Path(find_spec("persample_bench").origin).parent


@dataclass
class Side:
    """What one side runs: a Python, and the folder its ``persample_core`` is imported from."""

    name: str
    python: str
    core: Path  # the folder holding persample_core
    harness: Path  # the folder holding today's persample_bench, and nothing else
    said: str  # where the code comes from, for the report

    def env(self) -> dict:
        """The worker's environment: this side's persample_core first, then today's harness, then the user's
        PYTHONPATH and, last, the folder ab was started in (where a ``MODULE:FUNCTION`` workload's module is found
        when PYTHONPATH does not have it). Each of the first two folders holds one package, linked: the folder a
        package is installed in is site-packages, and on PYTHONPATH it would put this environment's torch before
        the side's own."""
        paths = [str(self.core), str(self.harness), os.environ.get("PYTHONPATH", ""), os.getcwd()]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}


@contextmanager
def sides(ref: str | None, baseline_python: str | None, start: Path):
    """The baseline (A) and the candidate (B), in a temporary folder removed on the way out, however it ends."""
    if baseline_python is not None and not (Path(baseline_python).is_file() and os.access(baseline_python, os.X_OK)):
        raise HistoryError(
            f"--baseline-python {baseline_python}: no Python there; give the path of an interpreter, "
            "e.g. other-venv/bin/python"
        )
    folder = Path(tempfile.mkdtemp(prefix="persample-ab-"))
    try:
        repo = repository(start)
        core = candidate_core(repo)
        (folder / "harness").mkdir()
        (folder / "harness" / "persample_bench").symlink_to(todays_harness(), target_is_directory=True)
        linked = {}
        for name in "AB":
            (folder / name).mkdir()
            linked[name] = folder / name / "persample_core"
        linked["B"].symlink_to(core, target_is_directory=True)
        here = f"persample_core of {'the working tree ' + str(repo) if repo else core.parent}"
        dirty = repo is not None and bool(_git(repo, "status", "--porcelain", "--", "persample_core", text=True).stdout)
        b_said = here + (" (uncommitted changes)" if dirty else "")
        if ref is not None:
            commit = extract(repo, ref, folder / "A")
            a_said = f"persample_core of {ref} ({commit[:10]})"
        else:
            linked["A"].symlink_to(core, target_is_directory=True)
            a_said = here
        yield (
            Side("A", baseline_python or sys.executable, folder / "A", folder / "harness", a_said),
            Side("B", sys.executable, folder / "B", folder / "harness", b_said),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _medians(timed: dict) -> dict:
    """A worker's log medians at one point: the speedup's (as method/baseline), the method's and the baseline's."""
    method, baseline = np.asarray(timed["method"]), np.asarray(timed["baseline"])
    return {
        "ratio": float(np.log(np.median(method / baseline))),
        "time": float(np.log(np.median(method))),
        "baseline": float(np.log(np.median(baseline))),
    }


def side_logs(answers: list[dict], level: str) -> dict:
    """``{(point, metric): [log median of each worker]}`` of one side's answers at slowdown ``level``."""
    logs = {}
    for answer in answers:
        for point_id, timed in answer["levels"][level].items():
            point = Point(*answer["points"][point_id])
            for metric, value in _medians(timed).items():
                baseline = replace(point, method=baseline_of(point.method))
                key = (baseline, "time") if metric == "baseline" else (point, metric)
                logs.setdefault(key, []).append(value)
    return logs


def paired(before, after) -> tuple[float, float, float, float, float]:
    """(change, low, high, p, spread) of ``after`` over ``before`` (log values, one per pair of processes, in the
    same order): the paired Student's t on the pairs' differences, one-sided (after slower); ``spread`` is one
    pair's difference's standard deviation."""
    differences = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    shift, df = differences.mean(), len(differences) - 1
    spread = float(differences.std(ddof=1))
    error = spread / np.sqrt(len(differences))
    if error == 0:  # identical pairs: nothing to test against
        return float(np.expm1(shift)), float(np.expm1(shift)), float(np.expm1(shift)), float(shift <= 0), 0.0
    reach = float(stats.t.ppf(0.975, df)) * error
    p_value = float(stats.t.sf(shift / error, df))
    return float(np.expm1(shift)), float(np.expm1(shift - reach)), float(np.expm1(shift + reach)), p_value, spread


def compare_sides(a: dict, b: dict) -> list[gate.Change]:
    """Every (point, metric) both sides have from two pairs or more, and each method's geometric mean over its
    points (per device and metric, two points or more), as unjudged rows for ``gate.judge``."""
    rows = {key: (a[key], b[key]) for key in sorted(a.keys() & b.keys()) if len(a[key]) == len(b[key]) >= 2}
    groups = {}
    for point, metric in rows:
        groups.setdefault((point.method, point.where, metric), []).append((point, metric))
    for (method, device, metric), keys in groups.items():
        if len(keys) >= 2:
            share = 1 / len(keys)
            pooled = gate.Pooled(method, device, len(keys), tuple((p.id, share) for p, _ in keys), weighted=False)
            rows[(pooled, metric)] = tuple(np.mean([rows[key][side] for key in keys], axis=0) for side in (0, 1))
    changes = []
    for (point, metric), (before, after) in rows.items():
        change, low, high, p_value, spread = paired(before, after)
        first, second = float(np.exp(np.mean(before))), float(np.exp(np.mean(after)))
        changes.append(
            gate.Change(
                point=point,
                metric=metric,
                before=first,
                after=second,
                change=change,
                low=low,
                high=high,
                p_value=p_value,
                regressed=False,
                noise=spread,
            )
        )
    return changes


def check_comparable(a: dict, b: dict) -> None:
    """Refuse sides (their workers' first answers) that see different hardware or compute with different numerics
    (another torch's defaults), before anything is timed."""
    differences = hardware_differences(a["machine"], b["machine"])
    if differences:
        raise HardwareMismatch(
            f"the two sides see different hardware ({'; '.join(differences)}); give the baseline a Python with the "
            "same torch build (CPU or CUDA) and the same visible devices"
        )
    check_numerics(a["machine"], b["machine"], names=("the baseline (A)", "the candidate (B)"))


def run(sides_: tuple, request: dict, pairs: int, seconds: float, progress=print) -> dict:
    """``{"A": [answer, ...], "B": [...]}``: one answer per process, the i-th of A paired with the i-th of B, each
    in the form of ``persample_bench.worker``'s (its slices' rounds joined per point)."""
    answers = {"A": [], "B": []}
    slowdown = float(os.environ.get(TEST_SLOWDOWN, "0") or 0)
    turns = max(1, round(seconds / SLICE))
    started = time.perf_counter()
    for number in range(1, pairs + 1):
        with ExitStack() as alive:
            live = {
                side.name: alive.enter_context(
                    workers.Worker(
                        {**request, "slowdowns": [slowdown if side.name == "B" else 0.0]},
                        python=side.python,
                        env=side.env(),
                        cwd=side.core,
                    )
                )
                for side in sides_
            }  # both start torch and prepare their points at once, on a core each
            ready = {}
            for side in sides_:
                try:
                    ready[side.name] = live[side.name].answer()
                except workers.WorkerFailed as err:
                    if err.unusable:
                        raise BaselineUnusable(f"side {side.name} ({side.said}): {err}") from None
                    raise
            check_comparable(ready["A"], ready["B"])
            timed = {name: {pid: {"method": [], "baseline": []} for pid in ready[name]["points"]} for name in ready}
            for turn in range(turns):
                for point_id in ready["A"]["points"]:
                    for side in sides_ if turn % 2 == 0 else sides_[::-1]:
                        for name, values in live[side.name].ask(point_id, seconds / turns).items():
                            timed[side.name][point_id][name] += values
        for name, said in ready.items():
            level = said.pop("level")
            answers[name].append({**said, "levels": {level: timed[name]}})
        speedups = "; ".join(
            f"{point_id.rsplit('-', 1)[0]} "
            + " / ".join(f"{1 / np.exp(_medians(timed[name][point_id])['ratio']):.2f}x" for name in "AB")
            for point_id in timed["A"]
        )
        progress(f"pair {number}/{pairs} (A / B): {speedups} ({time.perf_counter() - started:.0f} s so far)")
    return answers


def changes_of(answers: dict) -> list[gate.Change]:
    """The unjudged rows of a finished A/B run."""
    level = {side: next(iter(answers[side][0]["levels"])) for side in "AB"}
    return compare_sides(side_logs(answers["A"], level["A"]), side_logs(answers["B"], level["B"]))


def save(path: Path, answers: dict, request: dict) -> None:
    path.write_text(json.dumps({"request": request, "answers": answers}))
