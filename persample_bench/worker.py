"""A measuring process: points timed interleaved with their baseline, at each slowdown, as JSON.

The gate's commands that measure (``persample ab``, ``persample sensitivity``)
start it as ``python -m persample_bench.worker`` and write a request on its
stdin::

    {"points": [["mlp", "vmap", 64, "cpu"], ...], "slowdowns": [0.0, 0.05], "sweep": "mission",
     "precision": 0.02, "max_time": 6, "threads": 1, "timer": "cpu", "heap": "kept"}

(all but ``points`` optional; precision and time cap default to the sweep's
for its gated points). Each point and its baseline (the loop) are prepared as
the suite prepares them (checked against float64 first), then every slowdown
is timed in turn, the method slowed by ``timing.slowed``, each until its
speedup is known to the precision or the time cap (``timing.measure``). The
answer, on stdout::

    {"machine": {...}, "points": {"mlp-vmap-B64-cpu": ["mlp", "vmap", 64, "cpu"]},
     "levels": {"0.05": {"mlp-vmap-B64-cpu": {"method": [...], "baseline": [...], "rounds": 31, ...}}}}

A request it cannot measure (an unknown sweep, clock, heap or point) is
refused with exit status 2, code it cannot run (no torch in this Python, a
``persample_core`` without what this harness needs: ``persample ab`` runs
other versions of it) with 3; either with one line on stderr. Measuring stays
in this process, apart from the gate's, which imports no torch.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from persample_gate.runs import Point
from persample_gate.workers import REFUSED, UNUSABLE


def run(request: dict) -> dict:
    import torch

    from persample_bench.grid import DEFAULT_SWEEP, SWEEPS
    from persample_bench.hardware import machine_info
    from persample_bench.memory import apply_heap_policy
    from persample_bench.prepare import prepare_point
    from persample_bench.timing import CLOCKS, check_timer, measure, slowed
    from persample_core import BASELINE
    from persample_core.validate import check_choice

    threads, timer = request.get("threads", 1), request.get("timer", "cpu")
    sweep, heap = request.get("sweep", DEFAULT_SWEEP), request.get("heap", "kept")
    check_choice("timer", timer, CLOCKS)
    check_choice("sweep", sweep, SWEEPS)
    check_timer(timer, threads)
    given = {"target": request.get("precision"), "max_time": request.get("max_time")}
    precision = replace(SWEEPS[sweep].gated, **{name: value for name, value in given.items() if value is not None})
    torch.set_num_threads(threads)
    heap_said = apply_heap_policy(heap)
    points = [Point(*fields) for fields in request["points"]]
    prepared = {
        point: (prepare_point(replace(point, method=BASELINE), heap=heap), prepare_point(point, heap=heap))
        for point in points
    }
    clock = CLOCKS[timer]
    levels = {}
    for fraction in request.get("slowdowns", [0.0]):
        levels[str(fraction)] = {}
        for point, (baseline, method) in prepared.items():
            fns = {"method": slowed(method.run, fraction, clock) if fraction else method.run, "baseline": baseline.run}
            samples, reached = measure(fns, precision, clock)
            levels[str(fraction)][point.id] = {**samples, **reached}
    return {
        "machine": {**machine_info(), "timer": timer, "heap": heap_said, "heap_policy": heap, "baseline": BASELINE},
        "points": {point.id: [point.workload, point.method, point.batch_size, point.device] for point in points},
        "levels": levels,
    }


def main() -> int:
    try:
        answer = run(json.load(sys.stdin))
    except ImportError as err:
        if getattr(err, "name", None) == "torch":
            said = f"{sys.executable} has no torch; install it there (pip install torch)"
        else:  # today's harness asks the library under test for a module or name it does not have
            said = f"this persample_core lacks what today's harness needs ({err})"
        print(f"persample worker: {said}", file=sys.stderr)
        return UNUSABLE
    except ValueError as err:  # the request names something that does not exist, or cannot be measured here
        print(f"persample worker: {err}", file=sys.stderr)
        return REFUSED
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
