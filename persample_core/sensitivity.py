"""How small a slowdown does the gate catch, and how often does it cry wolf?

A benchmark script, not a test: ``persample sensitivity``. It times a small
grid the way the pytest-benchmark suite does (loop and vmap in interleaved
rounds, as many as the sweep's GATED_ROUNDS give), with slowdowns of 3, 5, 10
and 20% injected into vmap by a wrapper that does proportionally more work.
Every trial is a process of its own, which times every level in turn, so the
study sees what a user's two runs would: the noise between processes as well
as within one. Every unchanged run is then gated against the unchanged run of
every other trial (false alarms) and against the slowed runs of every other
trial (detection), point by point, on the geometric mean of the points (the
gate's pooled row, once the history has enough runs) and for the run as a
whole.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from persample_core import gate
from persample_core.grid import GATED_ROUNDS, SWEEPS, Point
from persample_core.history import Run
from persample_core.methods import BASELINE
from persample_core.suite import prepare_point
from persample_core.timing import CLOCKS, check_timer, interleaved, rounds_to_fill

SLOWDOWNS = (0.0, 0.03, 0.05, 0.10, 0.20)
STUDY_POINTS = (Point("simple_cnn", "vmap", 8, "cpu"), Point("simple_cnn", "vmap", 32, "cpu"),
                Point("mlp", "vmap", 64, "cpu"), Point("tiny_transformer", "vmap", 64, "cpu"))


def slowed(fn, fraction: float, clock=time.perf_counter):
    """``fn`` doing ``fraction`` more work: after each call it spins for that share of the call's time.

    ``clock`` is the clock the call is timed with, so that the added work is
    the same share on it. Wrap a synchronised callable (a prepared point's
    ``run``) so that on CUDA the call's time is the GPU's, not the launch's.
    """

    def slow(*args):
        start = clock()
        out = fn(*args)
        until = start + (clock() - start) * (1 + fraction)
        while clock() < until:
            pass
        return out

    return slow


def measure(prepared: dict, fraction: float, sweep: str, clock) -> dict:
    """One run of the study's grid: ``{point: (vmap rounds, loop rounds)}``, vmap slowed by ``fraction``."""
    min_rounds, max_time = GATED_ROUNDS[sweep]
    result = {}
    for point, (loop, vmap) in prepared.items():
        fns = {"loop": loop.run, "vmap": slowed(vmap.run, fraction, clock) if fraction else vmap.run}
        rounds = interleaved(fns, rounds=rounds_to_fill(fns, min_rounds, max_time), warmup=0, clock=clock)
        result[point] = (rounds["vmap"], rounds["loop"])
    return result


def trial(sweep: str, timer: str, points=STUDY_POINTS) -> dict:
    """``{slowdown: {point id: (vmap rounds, loop rounds)}}``: every level once, in turn, in this process."""
    prepared = {point: (prepare_point(replace(point, method=BASELINE)), prepare_point(point)) for point in points}
    return {fraction: {point.id: rounds for point, rounds in measure(prepared, fraction, sweep, CLOCKS[timer]).items()}
            for fraction in SLOWDOWNS}


def as_run(name: str, rounds: dict, points=STUDY_POINTS) -> Run:
    by_id = {point.id: point for point in points}
    return Run(Path(name), {}, "", {by_id[i]: vmap for i, (vmap, _) in rounds.items()},
               {by_id[i]: loop for i, (_, loop) in rounds.items()})


def collect(sweep: str, trials: int, threads: int, timer: str, progress=print) -> list[dict]:
    """What ``trial`` returns, from each of ``trials`` processes, one after the other."""
    results = []
    for number in range(trials):
        started = time.perf_counter()
        child = subprocess.run([sys.executable, "-m", "persample_core.sensitivity", "--trial", "--sweep", sweep,
                                "--threads", str(threads), "--timer", timer], capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"trial {number + 1} failed:\n{child.stderr[-3000:]}")
        results.append(json.loads(child.stdout))
        progress(f"trial {number + 1}/{trials} ({time.perf_counter() - started:.0f} s)")
    return results


def by_slowdown(trials: list[dict]) -> dict:
    """``{slowdown: [Run, ...]}``: the trials' runs, one per trial at every level."""
    return {fraction: [as_run(f"trial{number}-{fraction:.0%}", trial_[str(fraction)]) for number, trial_ in enumerate(trials)]
            for fraction in SLOWDOWNS}


def flagged(runs: dict, threshold: float, *, with_history: bool = True) -> dict:
    """``{slowdown: {row: (flagged, pairs)}}``, rows: each point id, "all points", the pooled points
    (with history), "runs (any row)".

    Runs of different trials only: unchanged against unchanged (each pair
    once) for false alarms, unchanged against slowed for detection.
    ``with_history``: the gate knows the noise between runs from the unchanged
    runs of the other trials, as it would from the runs stored before a
    candidate; without, from the rounds alone (a new machine).
    """
    unchanged = runs[0.0]
    result = {}
    for fraction, candidates in runs.items():
        pairs = (itertools.combinations(range(len(unchanged)), 2) if fraction == 0 else
                 ((i, j) for i, j in itertools.product(range(len(unchanged)), range(len(candidates))) if i != j))
        counts = {}
        for i, j in pairs:
            history = [run for k, run in enumerate(unchanged) if k not in (i, j)] if with_history else []
            changes = gate.compare_runs(unchanged[i], candidates[j], history=history,
                                        thresholds={"ratio": threshold}, metrics=("ratio",))
            verdicts = dict(sorted((c.point.id, c.regressed) for c in changes if isinstance(c.point, Point)))
            pooled = {c.point.id: [c.regressed] for c in changes if isinstance(c.point, gate.Pooled)}
            rows = {**{point: [verdict] for point, verdict in verdicts.items()}, "all points": list(verdicts.values()),
                    **pooled, "runs (any row)": [any(c.regressed for c in changes)]}
            for row, flags in rows.items():
                done, total = counts.get(row, (0, 0))
                counts[row] = (done + sum(flags), total + len(flags))
        result[fraction] = counts
    return result


def format_study(results: dict, threshold: float) -> str:
    """``results``: what ``flagged`` returns, as a table: a row per point, a column per slowdown."""
    fractions = sorted(results)
    header = [f"flagged at a {threshold:.0%} threshold".ljust(30)] + [
        ("none (false alarm)" if fraction == 0 else f"{fraction:.0%} slower").rjust(20) for fraction in fractions]
    lines = ["".join(header)]
    for row in results[fractions[0]]:
        cells = [f"{done / total:6.1%} ({done}/{total})".rjust(20) for done, total in (results[f][row] for f in fractions)]
        lines.append(row.ljust(30) + "".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="persample sensitivity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", choices=SWEEPS, default="quick", help="rounds as in this sweep (default: quick)")
    parser.add_argument("--trials", type=int, default=12, help="processes, each timing every level (default: 12)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.10, 0.05],
                        help="gate thresholds to report (default: 0.10 0.05)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    parser.add_argument("--timer", choices=CLOCKS, default="cpu", help="clock, as the suite's --timer (default: cpu)")
    parser.add_argument("--save", metavar="FILE", help="also write the raw rounds of every trial to FILE (JSON)")
    parser.add_argument("--load", metavar="FILE", help="gate the trials saved in FILE instead of measuring anew")
    parser.add_argument("--trial", action="store_true", help=argparse.SUPPRESS)  # one trial, as JSON on stdout
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    try:
        check_timer(args.timer, args.threads)
    except ValueError as err:
        parser.error(str(err))
    if args.trial:
        torch.set_num_threads(args.threads)
        print(json.dumps(trial(args.sweep, args.timer)))
        return 0
    if args.save and Path(args.save).exists():
        parser.error(f"{args.save} exists: pass another --save file, nothing is overwritten")
    if args.trials < 3 and not args.load:
        parser.error("--trials must be at least 3: runs are compared across trials, and detection needs two others")
    if args.load:
        study = json.loads(Path(args.load).read_text())
    else:
        study = {"sweep": args.sweep, "threads": args.threads, "timer": args.timer,
                 "trials": collect(args.sweep, args.trials, args.threads, args.timer,
                                   progress=lambda line: print(line, file=sys.stderr, flush=True))}
        if args.save:
            Path(args.save).write_text(json.dumps(study))
    print(f"points: {', '.join(p.id for p in STUDY_POINTS)}; {study['sweep']} sweep: gated rounds "
          f"{GATED_ROUNDS[study['sweep']]}; {study['threads']} thread(s), {study['timer']} clock; "
          f"{len(study['trials'])} trials, a process each", flush=True)
    runs = by_slowdown(study["trials"])
    for with_history in (True, False):
        print("\nthe gate knowing the noise between runs (from the other trials' unchanged runs, as from stored runs):"
              if with_history else f"\nthe gate on the rounds alone (fewer than {gate.MIN_HISTORY} runs stored):")
        for threshold in args.thresholds:
            print(format_study(flagged(runs, threshold, with_history=with_history), threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
