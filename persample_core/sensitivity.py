"""How small a slowdown does the gate catch, and how often does it cry wolf?

A benchmark script, not a test: ``persample sensitivity``. It times a small
grid the way the pytest-benchmark suite does (loop and vmap in interleaved
rounds, as many rounds as the sweep's min-rounds and max-time give), many
times over, with slowdowns of 3, 5, 10 and 20% injected into vmap by a wrapper
that does proportionally more work. Runs of every level are taken in turn, so
drift of the machine spreads over all levels alike. Every unchanged run is
then gated against every other unchanged run (false alarms), and against
every slowed run (detection).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

from persample_core import gate
from persample_core.grid import ROUNDS, SWEEPS, Point
from persample_core.history import Run
from persample_core.methods import BASELINE
from persample_core.suite import prepare_point
from persample_core.timing import interleaved, rounds_for

SLOWDOWNS = (0.0, 0.03, 0.05, 0.10, 0.20)
STUDY_POINTS = (Point("simple_cnn", "vmap", 8, "cpu"), Point("simple_cnn", "vmap", 32, "cpu"),
                Point("mlp", "vmap", 64, "cpu"), Point("tiny_transformer", "vmap", 64, "cpu"))


def slowed(fn, fraction: float):
    """``fn`` doing ``fraction`` more work: after each call it spins for that share of the call's time.

    Wrap a synchronised callable (a prepared point's ``run``) so that on CUDA
    the call's time is the GPU's, not the launch's.
    """

    def slow(*args):
        start = time.perf_counter()
        out = fn(*args)
        until = start + (time.perf_counter() - start) * (1 + fraction)
        while time.perf_counter() < until:
            pass
        return out

    return slow


def measure(prepared: dict, fraction: float, min_rounds: int, max_time: float) -> Run:
    """One run of the study's grid: interleaved rounds of loop and vmap (slowed by ``fraction``)."""
    samples, baseline_rounds = {}, {}
    for point, (loop, vmap) in prepared.items():
        fns = {"loop": loop.run, "vmap": slowed(vmap.run, fraction) if fraction else vmap.run}
        per_round = sum(times[0] for times in interleaved(fns, rounds=1, warmup=0).values())
        rounds = interleaved(fns, rounds=rounds_for(per_round, min_rounds, max_time), warmup=0)
        samples[point], baseline_rounds[point] = rounds["vmap"], rounds["loop"]
    return Run(Path(f"study-{fraction:.0%}"), {}, "", samples, baseline_rounds)


def collect(sweep: str, trials: int, points=STUDY_POINTS, progress=print) -> dict:
    """``{slowdown: [Run, ...]}``: ``trials`` runs per level, levels taken in turn."""
    min_rounds, max_time = ROUNDS[sweep]
    prepared = {point: (prepare_point(replace(point, method=BASELINE)), prepare_point(point)) for point in points}
    runs = {fraction: [] for fraction in SLOWDOWNS}
    for trial in range(trials):
        started = time.perf_counter()
        for fraction in SLOWDOWNS:
            runs[fraction].append(measure(prepared, fraction, min_rounds, max_time))
        progress(f"trial {trial + 1}/{trials} ({time.perf_counter() - started:.0f} s)")
    return runs


def flagged_pairs(runs: dict, threshold: float) -> dict:
    """``{slowdown: (pairs the gate flags, pairs)}``: unchanged vs unchanged, and unchanged vs slowed."""
    result = {}
    for fraction, candidates in runs.items():
        pairs = (list(itertools.combinations(runs[0.0], 2)) if fraction == 0
                 else list(itertools.product(runs[0.0], candidates)))
        flagged = sum(any(c.regressed for c in gate.compare_runs(a, b, thresholds={"ratio": threshold})
                          if c.metric == "ratio") for a, b in pairs)
        result[fraction] = (flagged, len(pairs))
    return result


def format_study(results: dict) -> str:
    """``results``: {threshold: {slowdown: (flagged, pairs)}} as one table, a column per threshold."""
    thresholds = sorted(results)
    lines = ["injected slowdown  " + "  ".join(f"flagged at {t:.0%} threshold".rjust(26) for t in thresholds)]
    for fraction in SLOWDOWNS:
        label = "none (false alarm)" if fraction == 0 else f"{fraction:.0%}"
        cells = [f"{f / n:7.1%} ({f}/{n} pairs)".rjust(26) for f, n in (results[t][fraction] for t in thresholds)]
        lines.append(label.ljust(18) + " " + "  ".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="persample sensitivity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", choices=SWEEPS, default="quick", help="rounds as in this sweep (default: quick)")
    parser.add_argument("--trials", type=int, default=20, help="runs per slowdown level (default: 20)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.10, 0.05],
                        help="gate thresholds to report (default: 0.10 0.05)")
    args = parser.parse_args(argv)
    if args.trials < 2:
        parser.error("--trials must be at least 2: false alarms compare unchanged runs with each other")
    print(f"points: {', '.join(p.id for p in STUDY_POINTS)}; {args.sweep} sweep rounds {ROUNDS[args.sweep]}", flush=True)
    runs = collect(args.sweep, args.trials, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_study({threshold: flagged_pairs(runs, threshold) for threshold in args.thresholds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
