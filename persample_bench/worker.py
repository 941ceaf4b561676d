"""A measuring process: points timed interleaved with their baseline, at each slowdown, as JSON.

The gate's commands that measure (``persample ab``, ``persample sensitivity``)
start it as ``python -m persample_bench.worker`` and write a request on its
stdin::

    {"points": [["mlp", "vmap", 64, "cpu"], ...], "slowdowns": [0.0, 0.05], "sweep": "mission",
     "precision": 0.02, "max_time": 6, "threads": 1, "timer": "cpu", "heap": "kept"}

(all but ``points`` optional; precision and time cap default to the sweep's
for its gated points; ``timer`` is the clock of CPU points, CUDA points are
timed on the wall clock whatever it says: ``timing.clock_for``). Each point
and its baseline (the loop; the non-private step for a DP step's point) are
prepared as the suite prepares them (checked against float64 first), then
every slowdown is timed in turn, the method slowed by ``timing.slowed``, each until its
speedup is known to the precision or the time cap (``timing.measure``). The
answer, on stdout::

    {"machine": {...}, "points": {"mlp-vmap-B64-cpu": ["mlp", "vmap", 64, "cpu"]},
     "levels": {"0.05": {"mlp-vmap-B64-cpu": {"method": [...], "baseline": [...], "rounds": 31, ...}}}}

With ``--serve`` it stays alive and times slices on demand (``serve``).
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

from persample_bench.runformat import DEFAULT_HEAP, REFUSED, UNUSABLE, Point, baseline_of


def _prepared(request: dict) -> tuple[dict, dict, object]:
    """The request's points prepared (checked against float64 first) with their baseline, under its thread count
    and heap: ``({point: (baseline, method, clock)}, machine, precision)``. A point's clock is the one its device
    is timed with: the request's timer on the CPU, the wall clock on CUDA (``timing.clock_for``)."""
    import torch

    from persample_bench.grid import DEFAULT_SWEEP, SWEEPS, check_device
    from persample_bench.hardware import machine_info
    from persample_bench.memory import apply_heap_policy
    from persample_bench.prepare import prepare_point
    from persample_bench.timing import CLOCKS, check_timer, clock
    from persample_core.validate import check_choice

    threads, timer = request.get("threads", 1), request.get("timer", "cpu")
    sweep, heap = request.get("sweep", DEFAULT_SWEEP), request.get("heap", DEFAULT_HEAP)
    check_choice("timer", timer, CLOCKS)
    check_choice("sweep", sweep, SWEEPS)
    points = [Point(*fields) for fields in request["points"]]
    for point in points:
        check_device(point.device)
    check_timer(timer, threads, [point.device for point in points])
    given = {"target": request.get("precision"), "max_time": request.get("max_time")}
    precision = replace(SWEEPS[sweep].gated, **{name: value for name, value in given.items() if value is not None})
    torch.set_num_threads(threads)
    heap_said = apply_heap_policy(heap)
    prepared = {
        point: (
            prepare_point(replace(point, method=baseline_of(point.method)), heap=heap),
            prepare_point(point, heap=heap),
            clock(timer, point.device),
        )
        for point in points
    }
    machine = {  # the first point's baseline: each point's rounds carry their own
        **machine_info(devices={point.device for point in points}),
        **{"timer": timer, "heap": heap_said, "heap_policy": heap, "baseline": baseline_of(points[0].method)},
    }
    return prepared, machine, precision


def _fns(baseline, method, clock, fraction: float) -> dict:
    from persample_bench.timing import slowed

    return {"method": slowed(method.run, fraction, clock) if fraction else method.run, "baseline": baseline.run}


def _ids(prepared: dict) -> dict:
    return {point.id: point.fields for point in prepared}


def run(request: dict) -> dict:
    from persample_bench.timing import measure

    prepared, machine, precision = _prepared(request)
    levels = {}
    for fraction in request.get("slowdowns", [0.0]):
        levels[str(fraction)] = {}
        for point, (baseline, method, clock) in prepared.items():
            samples, reached = measure(_fns(baseline, method, clock, fraction), precision, clock)
            levels[str(fraction)][point.id] = {**samples, **reached}
    return {"machine": machine, "points": _ids(prepared), "levels": levels}


def serve(lines, write) -> None:
    """Slices on demand (``--serve``): the first line is the request (one slowdown), answered with the machine and
    the points once they are prepared; each later line, ``{"point": id, "seconds": s}``, is answered with that
    point's method and baseline timed in interleaved rounds for ``s`` seconds (one round at least). It ends at the
    end of its input. ``persample ab`` keeps one such process a side alive and has them take turns, so that both
    sides are timed within the same second of the machine (``persample_gate.ab``)."""
    from persample_bench.timing import timed_for

    request = json.loads(next(lines))
    prepared, machine, _ = _prepared(request)
    (fraction,) = request.get("slowdowns", [0.0])
    fns = {point.id: (_fns(*sides, fraction), sides[-1]) for point, sides in prepared.items()}
    write({"machine": machine, "points": _ids(prepared), "level": str(fraction)})
    for line in lines:
        ask = json.loads(line)
        if ask["point"] not in fns:
            raise ValueError(f"no point {ask['point']!r} in this worker's request; prepared: {', '.join(fns)}")
        calls, clock = fns[ask["point"]]
        write(timed_for(calls, ask["seconds"], clock))


def _write(answer: dict) -> None:
    print(json.dumps(answer), flush=True)


def main() -> int:
    try:
        if sys.argv[1:] == ["--serve"]:
            serve(iter(sys.stdin), _write)
            return 0
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
    _write(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
