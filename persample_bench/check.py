"""``persample check SPEC``: every method on one model, checked against float64, timed briefly, and a recommendation.

For each method (``persample_core.METHODS``, or ``--methods``), as the suite
prepares a point (``prepare.prepare_point``): its per-sample gradients on a
fresh batch of ``prepare.CHECK_BATCH_SIZE`` samples against the float64 loop,
within the tolerance of the dtype (correct, with its worst relative error; or
declined, with the method's one-line reason; or wrong, which is a bug of the
method and fails the check). Then each correct method at ``--batch-size``: a
short timing (rounds until the median is known within 5% or ``--seconds``, five
rounds at least) and the peak memory of one call (``memory.peak_bytes``). The
recommendation: the fastest correct method, and the fastest whose peak fits
the memory budget (``--memory``, else the device's free memory). A table for
people; ``--json`` writes the same as JSON on stdout, the progress going to
stderr either way.

Exit status: 0 a method is recommended; 1 a method was wrong, or none is
correct; 2 bad input (a spec that does not load or breaks the contract, a bad
option), with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass, field

from persample_bench.runformat import DEFAULT_DTYPE, DEFAULT_HEAP, DTYPES, HEAPS, TIMERS, Point, positive
from persample_bench.summary import format_bytes, format_seconds, render

SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$")
UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
UNITS["TiB"] = 2**40
TARGET = 0.05  # the short timing's precision: the median within +-5%, or --seconds


def memory_size(text: str) -> int:
    """``"4GiB"``, ``"500MB"`` or a number of bytes, as bytes; argparse's error naming it otherwise."""
    match = SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount of memory; write e.g. 4GiB, 500MB or 1000000 (units: {', '.join(UNITS)})"
        )
    return int(float(match[1]) * UNITS[match[2] or "B"])


@dataclass
class Checked:
    """One method on the model: its outcome against float64, and where correct, its time and memory."""

    method: str
    outcome: str  # "correct", "declined" or "wrong"
    detail: str  # the worst relative error, the reason it declined, or how far off it is
    error: float | None = None
    median: float | None = None
    rounds: list = field(default_factory=list)
    peak_bytes: int | None = None


def check_one(point: Point, *, seconds: float, heap: str, clock, progress) -> Checked:
    """``point``'s method checked against float64, then timed and its peak memory taken, as ``Checked``."""
    from persample_bench.memory import WouldNotFit, peak_bytes
    from persample_bench.precision import Precision
    from persample_bench.prepare import check_method, prepare_point
    from persample_bench.timing import measure
    from persample_core import MethodUnavailable, ReferenceMismatch, is_out_of_memory

    try:
        comparison = check_method(point.workload, point.method, point.device, point.dtype)
    except MethodUnavailable as err:
        return Checked(point.method, "declined", str(err))
    except ReferenceMismatch as err:
        return Checked(point.method, "wrong", str(err))
    name, error = comparison.worst
    checked = Checked(point.method, "correct", f"worst {error:.1e} ({name})", error)
    try:
        prepared = prepare_point(point, heap=heap, progress=progress)
        samples, _ = measure({"method": prepared.run}, Precision(TARGET, seconds, min_rounds=5, pilot_rounds=2), clock)
        checked.rounds = samples["method"]
        checked.median = statistics.median(checked.rounds)
        checked.peak_bytes = peak_bytes(prepared.run, point.device)
    except MethodUnavailable as err:  # right at the check's batch, unavailable at this one (compiling, the guard)
        return Checked(point.method, "declined", f"at B={point.batch_size}: {err}")
    except WouldNotFit as err:
        checked.detail += f"; not timed: {err}"
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        checked.detail += f"; not timed: out of memory at B={point.batch_size}"
    return checked


def recommend(checked: list[Checked], budget: int | None) -> dict:
    """The fastest correct method, and the fastest whose peak memory is within ``budget`` bytes."""
    timed = sorted((c for c in checked if c.median is not None), key=lambda c: c.median)
    within = [c for c in timed if budget is None or (c.peak_bytes is not None and c.peak_bytes <= budget)]
    return {"fastest": timed[0].method if timed else None, "fastest_within": within[0].method if within else None}


def table(checked: list[Checked], baseline: float | None) -> str:
    header = ("method", "against float64", "median", "vs loop", "peak mem")
    rows = [
        (
            c.method,
            f"{c.outcome}: {c.detail}" if c.outcome != "correct" or c.median is None else f"correct, {c.detail}",
            "-" if c.median is None else format_seconds(c.median),
            "-" if c.median is None or not baseline else f"{baseline / c.median:.2f}x",
            format_bytes(c.peak_bytes),
        )
        for c in checked
    ]
    return render(header, rows, left=2)


def parser() -> argparse.ArgumentParser:
    from persample_bench.grid import DEVICES

    p = argparse.ArgumentParser(
        prog="persample check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "workload", metavar="SPEC", help="MODULE:FUNCTION, a registered name or a built-in (e.g. resnet18_gn)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="the batch to time and measure (default: 64)")
    p.add_argument("--device", default="cpu", help=f"{', '.join(DEVICES)} or cuda:N (default: cpu)")
    p.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE, help="the dtype the model is cast to")
    p.add_argument("--methods", help="comma-separated methods to check (default: every one)")
    p.add_argument(
        "--memory", type=memory_size, help="the memory budget, e.g. 8GiB (default: the device's free memory)"
    )
    p.add_argument("--seconds", type=positive, default=2.0, help="seconds of timing per method, at most (default: 2)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--timer", choices=TIMERS, default="wall", help="clock of a CPU model (default: wall)")
    p.add_argument("--heap", choices=HEAPS, default=DEFAULT_HEAP, help="heap policy (default: kept)")
    p.add_argument("--json", action="store_true", help="write the result as JSON on stdout")
    return p


def run(args, progress) -> tuple[dict, str]:
    """The check of ``args`` as (JSON-ready result, the table and its lines for people)."""
    import torch

    from persample_bench.grid import DEFAULT_SWEEP, check_device, check_methods
    from persample_bench.memory import apply_heap_policy, reusable
    from persample_bench.timing import check_timer, clock, trainable_numel
    from persample_core import BASELINE, METHODS, make_workload
    from persample_core.workloads import resolve

    resolve(args.workload)
    check_device(args.device)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.dtype == "float16" and args.device == "cpu":
        raise ValueError("float16 is checked on CUDA only; on the CPU use bfloat16")
    methods = check_methods(args.methods.split(","), DEFAULT_SWEEP) if args.methods else None
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    check_timer(args.timer, torch.get_num_threads(), [args.device])
    heap = apply_heap_policy(args.heap)
    model = make_workload(args.workload, batch_size=1, device=args.device, dtype=getattr(torch, args.dtype)).model
    params = trainable_numel(model)
    if args.memory is not None:
        budget = args.memory
    else:  # before any method runs: what the methods free stays in the process, kept for the next one
        budget = (reusable(torch.device(args.device)) or (None,))[0]
    checked = []
    for method in methods or list(METHODS):
        progress(f"{method}: against float64, then timed at B={args.batch_size}")
        point = Point(args.workload, method, args.batch_size, args.device, args.dtype)
        checked.append(
            check_one(
                point, seconds=args.seconds, heap=args.heap, clock=clock(args.timer, args.device), progress=progress
            )
        )
    chosen = recommend(checked, budget)
    loop = next((c.median for c in checked if c.method == BASELINE), None)
    result = {
        "workload": args.workload,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
        "parameters": params,
        "threads": torch.get_num_threads(),
        "heap": heap,
        "memory_budget_bytes": budget,
        "methods": {
            c.method: {
                "outcome": c.outcome,
                "detail": c.detail,
                "error": c.error,
                "median_seconds": c.median,
                "rounds": c.rounds,
                "peak_memory_bytes": c.peak_bytes,
            }
            for c in checked
        },
        **chosen,
    }
    budget_said = (
        "no budget known"
        if budget is None
        else f"{format_bytes(budget)} ({'--memory' if args.memory is not None else 'free'})"
    )
    lines = [
        f"persample check {args.workload}: {params:,} trainable parameters, B={args.batch_size} on {args.device}, "
        f"{args.dtype}, {torch.get_num_threads()} torch thread(s), {args.timer} clock, heap {args.heap}",
        "",
        table(checked, loop),
        "",
        f"fastest correct: {chosen['fastest'] or 'none'}",
        f"fastest within {budget_said}: {chosen['fastest_within'] or 'none'}",
    ]
    if any(c.outcome == "wrong" for c in checked):
        lines.append("a method was wrong against float64: a bug of that method; please report it")
    return result, "\n".join(lines)


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    def progress(line: str) -> None:
        print(f"persample check: {line}", file=sys.stderr, flush=True)

    try:
        result, text = run(args, progress)
    except ImportError as err:
        print(f"persample check: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # a spec that does not load or breaks the contract, a bad option
        print(f"persample check: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else text)
    wrong = any(m["outcome"] == "wrong" for m in result["methods"].values())
    return 1 if wrong or result["fastest"] is None else 0


if __name__ == "__main__":
    sys.exit(main())
