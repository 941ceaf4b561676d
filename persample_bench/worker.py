"""A measuring process: points timed interleaved with their baseline, at each slowdown, as JSON.

The gate's commands that measure (``persample sensitivity``) start it as
``python -m persample_bench.worker`` and write a request on its stdin::

    {"points": [["mlp", "vmap", 64, "cpu"], ...], "slowdowns": [0.0, 0.05],
     "sweep": "quick", "threads": 1, "timer": "cpu"}

Each point and its baseline (the loop) are prepared as the suite prepares
them (checked against float64 first), then every slowdown is timed in turn,
the method slowed by ``timing.slowed``. The answer, on stdout::

    {"machine": {...}, "points": {"mlp-vmap-B64-cpu": ["mlp", "vmap", 64, "cpu"]},
     "levels": {"0.05": {"mlp-vmap-B64-cpu": [method rounds, baseline rounds]}}}

Measuring stays in this process, apart from the gate's, which imports no torch.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import torch

from persample_bench.grid import GATED_ROUNDS
from persample_bench.hardware import machine_info
from persample_bench.prepare import prepare_point
from persample_bench.timing import CLOCKS, check_timer, interleaved, rounds_to_fill, slowed
from persample_core import BASELINE
from persample_core.validate import check_choice
from persample_gate.runs import Point
from persample_gate.workers import REFUSED


def measure(prepared: dict, fraction: float, sweep: str, clock) -> dict:
    """``{point id: (method rounds, baseline rounds)}``, the method slowed by ``fraction``."""
    min_rounds, max_time = GATED_ROUNDS[sweep]
    result = {}
    for point, (baseline, method) in prepared.items():
        fns = {"method": slowed(method.run, fraction, clock) if fraction else method.run, "baseline": baseline.run}
        rounds = interleaved(fns, rounds=rounds_to_fill(fns, min_rounds, max_time), warmup=0, clock=clock)
        result[point.id] = (rounds["method"], rounds["baseline"])
    return result


def run(request: dict) -> dict:
    threads, timer, sweep = request.get("threads", 1), request.get("timer", "cpu"), request.get("sweep", "quick")
    check_choice("timer", timer, CLOCKS)
    check_choice("sweep", sweep, GATED_ROUNDS)
    check_timer(timer, threads)
    torch.set_num_threads(threads)
    points = [Point(*fields) for fields in request["points"]]
    prepared = {point: (prepare_point(replace(point, method=BASELINE)), prepare_point(point)) for point in points}
    return {
        "machine": {**machine_info(), "timer": timer},
        "points": {point.id: [point.workload, point.method, point.batch_size, point.device] for point in points},
        "levels": {
            str(fraction): measure(prepared, fraction, sweep, CLOCKS[timer])
            for fraction in request.get("slowdowns", [0.0])
        },
    }


def main() -> int:
    try:
        answer = run(json.load(sys.stdin))
    except ValueError as err:  # the request names something that does not exist, or cannot be measured here
        print(f"persample worker: {err}", file=sys.stderr)
        return REFUSED
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
