"""How small a slowdown does the gate catch, and how often does it cry wolf?

A benchmark script, not a test: ``persample sensitivity``. It times a small
grid the way the pytest-benchmark suite does (loop and vmap in interleaved
rounds, in a measuring process of the harness: ``persample_bench.worker``),
with slowdowns of 3, 5, 10 and 20% injected into vmap by a wrapper that does
proportionally more work.
Every trial is a process of its own, which times every level in turn, so the
study sees what a user's two runs would: the noise between processes as well
as within one. Every unchanged run is then gated against the unchanged run of
every other trial (false alarms) and against the slowed runs of every other
trial (detection), point by point, on the weighted geometric mean of the
points (the gate's pooled row, once the history has enough runs) and for the
run as a whole.

``--stored`` asks the same of runs the suite stored (a whole sweep, of
unchanged code), measuring nothing: each is gated against the others as they
are, and against the others with a method's rounds scaled by each slowdown,
which is what the wrapper does to a running method.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from persample_bench.runformat import DEFAULT_HEAP, HEAPS, TIMERS, Point, Run
from persample_gate import gate, history, workers
from persample_gate.ab import DEFAULT_POINTS
from persample_gate.gate import MIN_HISTORY
from persample_gate.history import HISTORY_RUNS

SLOWDOWNS = (0.0, 0.03, 0.05, 0.10, 0.20)
STUDY_POINTS = DEFAULT_POINTS  # the points ab judges by default: the study says how well it does there


def as_run(name: str, trial: dict, fraction: float) -> Run:
    """One level of a trial (what ``persample_bench.worker`` answered) as a run the gate can compare."""
    points = {point_id: Point(*fields) for point_id, fields in trial["points"].items()}
    rounds = trial["levels"][str(fraction)]
    return Run(
        Path(name),
        trial["machine"],
        "",
        {points[i]: timed["method"] for i, timed in rounds.items()},
        {points[i]: timed["baseline"] for i, timed in rounds.items()},
    )


def collect(sweep: str, trials: int, threads: int, timer: str, heap: str, progress=print) -> list[dict]:
    """What the worker answers, from each of ``trials`` processes, one after the other."""
    request = {
        "points": [p.fields for p in STUDY_POINTS],
        "slowdowns": SLOWDOWNS,
        "sweep": sweep,
        "threads": threads,
        "timer": timer,
        "heap": heap,
    }
    results = []
    for number in range(trials):
        started = time.perf_counter()
        results.append(workers.measure(request))
        progress(f"trial {number + 1}/{trials} ({time.perf_counter() - started:.0f} s)")
    return results


def by_slowdown(trials: list[dict]) -> dict:
    """``{slowdown: [Run, ...]}``: the trials' runs, one per trial at every level."""
    return {
        fraction: [as_run(f"trial{number}-{fraction:.0%}", trial, fraction) for number, trial in enumerate(trials)]
        for fraction in SLOWDOWNS
    }


def scaled(run: Run, method: str, fraction: float) -> Run:
    """``run`` as if ``method`` did ``fraction`` more work on every call: what ``slowed`` does, done to stored
    rounds. Every other point stays as it was: its rows are the gate's too, and share its alpha."""
    return replace(
        run,
        samples={
            point: [seconds * (1 + fraction) for seconds in rounds] if point.method == method else rounds
            for point, rounds in run.samples.items()
        },
    )


def from_storage(runs: list[Run], method: str) -> dict:
    """``{slowdown: [Run, ...]}``: stored runs of unchanged code, ``method`` ``scaled`` at every slowdown."""
    return {fraction: [scaled(run, method, fraction) for run in runs] for fraction in SLOWDOWNS}


def flagged(
    runs: dict, thresholds, *, with_history: bool = True, method: str = "vmap", progress=lambda line: None
) -> dict:
    """``{threshold: {slowdown: {row: (flagged, pairs)}}}``, rows: ``method``'s speedup at each of its points, at "all
    points" and on their weighted geometric mean (the gate's pooled row, with history), and "runs (any row)":
    any row flagged, of any method, speedup or time, a point or pooled: the gate's exit status.

    Runs of different trials only: unchanged against unchanged (each pair
    once) for false alarms, unchanged against slowed for detection.
    ``with_history``: the gate knows the noise between runs from the other
    unchanged runs (the last ``HISTORY_RUNS``), as it would from the runs
    stored before a candidate; without, as on a new machine, where the gate calls only a gross slowdown.
    """
    unchanged = runs[0.0]
    result = {threshold: {} for threshold in thresholds}
    for fraction, candidates in runs.items():
        pairs = (
            itertools.combinations(range(len(unchanged)), 2)
            if fraction == 0
            else ((i, j) for i, j in itertools.product(range(len(unchanged)), range(len(candidates))) if i != j)
        )
        counts = {threshold: {} for threshold in thresholds}
        for i, j in pairs:
            history = (
                [run for k, run in enumerate(unchanged) if k not in (i, j)][-HISTORY_RUNS:] if with_history else []
            )
            changes = gate.rows(unchanged[i], candidates[j], history=history)
            for threshold in thresholds:  # judged at each threshold: the rows' p and intervals do not depend on it
                judged = gate.judge(
                    changes, thresholds={"ratio": threshold, "time": threshold}, gross_only=len(history) < MIN_HISTORY
                )
                verdicts = [(c, c.regressed) for c in judged]
                speedups = [(c.point, flag) for c, flag in verdicts if c.metric == "ratio" and c.point.method == method]
                points = dict(sorted((point.id, flag) for point, flag in speedups if isinstance(point, Point)))
                rows = {
                    **{point: [flag] for point, flag in points.items()},
                    "all points": list(points.values()),
                    **{point.id: [flag] for point, flag in speedups if isinstance(point, gate.Pooled)},
                    "runs (any row)": [any(flag for _, flag in verdicts)],
                }
                for row, flags in rows.items():
                    done, total = counts[threshold].get(row, (0, 0))
                    counts[threshold][row] = (done + sum(flags), total + len(flags))
        for threshold in thresholds:
            result[threshold][fraction] = counts[threshold]
        progress(f"gated: {'unchanged' if fraction == 0 else f'{fraction:.0%} slower'}")
    return result


def format_study(results: dict, threshold: float) -> str:
    """``results``: what ``flagged`` returns, as a table: a row per point, a column per slowdown."""
    fractions = sorted(results)
    width = max(30, *(len(row) + 2 for row in results[fractions[0]]))
    header = [f"flagged at a {threshold:.0%} threshold".ljust(width)] + [
        ("none (false alarm)" if fraction == 0 else f"{fraction:.0%} slower").rjust(20) for fraction in fractions
    ]
    lines = ["".join(header)]
    for row in results[fractions[0]]:
        cells = [
            f"{done / total:6.1%} ({done}/{total})".rjust(20) for done, total in (results[f][row] for f in fractions)
        ]
        lines.append(row.ljust(width) + "".join(cells))
    return "\n".join(lines)


def stored_runs(refs: list[str], storage, method: str) -> list[Run]:
    """The runs ``refs`` name, or with none every run stored on this hardware; refused unless comparable."""
    paths = history.named_or_here(refs, storage)
    if len(paths) < 3:
        where = "given" if refs else f"stored on this hardware under {storage}"
        raise history.HistoryError(
            f"--stored needs at least 3 runs, {where}: {len(paths)}; store unchanged runs with: tox -e bench"
        )
    runs = [history.load(path) for path in paths]
    for run in runs[1:]:
        history.check_comparable(runs[0], run)
    points = [point for point in runs[0].samples if point.method == method]
    if not points:
        raise history.HistoryError(f"{runs[0].name} has no point of {method}; name a method it has with --method")
    if all(gate.ratio_samples(runs[0], point) is None for point in points):
        raise history.HistoryError(
            f"{runs[0].name} has no speedup of {method}: the loop's points are missing; "
            "store runs that time the loop too (-loop- in pytest's -k)"
        )
    return runs


def report(runs: dict, thresholds, *, method: str, sections=(True, False)) -> None:
    """What ``flagged`` finds, for each of ``sections``: with the noise between runs known (True), from the rounds
    alone (False)."""
    for with_history in sections:
        print(
            "\nthe gate knowing the noise between runs (each pair's history: the other unchanged runs, as the runs "
            "stored before a candidate):"
            if with_history
            else f"\nthe gate with too little history (fewer than {gate.MIN_HISTORY} runs stored: only a speedup "
            f"{1 + gate.GROSS:g}x worse is called):",
            flush=True,
        )
        results = flagged(
            runs,
            thresholds,
            with_history=with_history,
            method=method,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        for threshold in thresholds:
            print(format_study(results[threshold], threshold), flush=True)


def main(argv=None, storage=history.DEFAULT_STORAGE) -> int:
    parser = argparse.ArgumentParser(
        prog="persample sensitivity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sweep",
        default="quick",
        help="rounds as in this sweep (default: quick, the sweep that times every --method; the suite's default, "
        "mission, times only the loop, vmap and the floor)",
    )
    parser.add_argument("--trials", type=int, default=12, help="processes, each timing every level (default: 12)")
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.10, 0.05],
        help="gate thresholds to report (default: 0.10 0.05)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    parser.add_argument(
        "--timer",
        choices=TIMERS,
        default="cpu",
        help="clock of CPU points (default: cpu, as persample ab's, and for its reason: see persample ab --help)",
    )
    parser.add_argument(
        "--heap",
        choices=HEAPS,
        default=DEFAULT_HEAP,
        help=f"heap policy (default: {DEFAULT_HEAP}, the pytest suite's: the study is of the gate on its stored runs)",
    )
    parser.add_argument("--save", metavar="FILE", help="also write the raw rounds of every trial to FILE (JSON)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--load", metavar="FILE", help="gate the trials saved in FILE instead of measuring anew")
    source.add_argument(
        "--stored",
        nargs="*",
        metavar="RUN",
        help="instead of measuring, gate runs the suite stored, of unchanged code, against each other, "
        "with --method's rounds scaled by each slowdown: these saved ids or paths, or with none "
        "every run stored on this hardware (persample --storage DIR sensitivity --stored)",
    )
    parser.add_argument("--method", default="vmap", help="with --stored: the method slowed (default: vmap)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.stored is not None:
        if args.save:
            parser.error("--save keeps measured trials; --stored measures nothing: drop one of them")
        runs = stored_runs(args.stored, storage, args.method)
        commits = sorted({run.commit[:10] for run in runs})
        first, last = (run.name.split("_", 1)[0] for run in (runs[0], runs[-1]))
        print(
            f"{len(runs)} stored runs, {first} to {last}, commit(s) {', '.join(commits)}; "
            f"{args.method}'s points slowed by scaling its rounds; 'runs (any row)': any row flagged, of any method, "
            "speedup or time (the gate's exit status)",
            flush=True,
        )
        if len(commits) > 1:
            print(
                "runs of several commits: a real change between two of them counts as noise here, and can be "
                "flagged as a false alarm",
                flush=True,
            )
        # Each pair's history is the other runs: with enough of them that is the question a user with a history
        # asks; with fewer, the gate can only answer from the rounds.
        known = len(runs) - 2 >= gate.MIN_HISTORY
        report(from_storage(runs, args.method), args.thresholds, method=args.method, sections=(known,))
        return 0
    if args.save and Path(args.save).exists():
        parser.error(f"{args.save} exists: pass another --save file, nothing is overwritten")
    if args.trials < 3 and not args.load:
        parser.error("--trials must be at least 3: runs are compared across trials, and detection needs two others")
    if args.load:
        study = json.loads(Path(args.load).read_text())
    else:
        study = {
            "sweep": args.sweep,
            "threads": args.threads,
            "timer": args.timer,
            "heap": args.heap,
            "trials": collect(
                args.sweep,
                args.trials,
                args.threads,
                args.timer,
                args.heap,
                progress=lambda line: print(line, file=sys.stderr, flush=True),
            ),
        }
        if args.save:
            Path(args.save).write_text(json.dumps(study))
    print(
        f"points: {', '.join(p.id for p in STUDY_POINTS)}; {study['sweep']} sweep's gated rounds; "
        f"{study['threads']} thread(s), {study['timer']} clock, heap {study.get('heap', 'kept')}; "
        f"{len(study['trials'])} trials, a process each",
        flush=True,
    )
    report(by_slowdown(study["trials"]), args.thresholds, method="vmap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
