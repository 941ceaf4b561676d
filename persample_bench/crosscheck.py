"""Does the default job's headline match what the tutorial's code gives a user? Two processes, taking turns.

``python -m persample_bench.crosscheck``: vmap's speedup over the loop at
batch 64 on the CPU, one torch thread, measured in two processes alive
together:

- **plain**: the tutorial's own code under ``torch.utils.benchmark.Timer``
  in a plain Python process that imports nothing of this project's and
  changes no allocator setting (``persample_bench.tutorial``): what a reader
  of the tutorial who times it gets;
- **suite**: the default job's point, ``simple_cnn`` loop and vmap prepared
  and timed as ``tox -e bench`` times them (``prepare.prepare_point``,
  interleaved rounds, the job's clock and heap policy; ``--heap``/``--timer``
  change them), for as long as the plain side's turn takes.

The two take turns, plain then suite, then suite then plain (a turn: a
``Timer`` block of ``--seconds`` for each callable, or as long of interleaved
rounds), so that both see the same stretches of a machine whose speed wanders
over seconds (docs/studies/2026-12-03-ab.md); each side's speedup is the
median of its turns'. They must agree within ``--tolerance`` (15%; exit
status 1 where they do not). What differs between them is everything a user
meets and the suite could change: the heap policy, the clock, the process,
the code of the model and of the two methods. A slow test runs it
(tests/test_crosscheck.py); docs/measuring.md gives the figures.
"""

from __future__ import annotations

import argparse
import json
import select
import statistics
import subprocess
import sys
from dataclasses import replace

from persample_bench.memory import HEAP_POLICIES
from persample_bench.runformat import DEFAULT_HEAP, TIMERS, Point
from persample_bench.tutorial import BATCH

POINT = Point("simple_cnn", "vmap", BATCH, "cpu")  # the tutorial's point of the default job
ANSWER_SECONDS = 120  # a child's start or turn takes seconds; one that takes this long is stopped
JOB_TIMER = "cpu"  # tox -e bench's --persample-timer
PLAIN = "torch.utils.benchmark.Timer on the tutorial's code, a plain process, system allocator, 1 thread, wall clock"


def serve_suite(heap: str, timer: str) -> int:
    """The suite's side: each line read is a number of seconds, answered with one JSON line, the speedup of the
    default job's interleaved rounds (``timing.timed_for``) timed for twice that long, as long as the plain side's
    two blocks take, so that both sides see the same stretches of the machine; one round at least."""
    import torch

    from persample_bench.precision import statistic
    from persample_bench.prepare import prepare_point
    from persample_bench.timing import clock, timed_for
    from persample_core import BASELINE

    torch.set_num_threads(1)
    fns = {
        "method": prepare_point(POINT, heap=heap).run,
        "baseline": prepare_point(replace(POINT, method=BASELINE), heap=heap).run,
    }
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        samples = timed_for(fns, 2 * float(line), clock(timer, POINT.device))
        print(json.dumps({"speedup": 1 / statistics.median(statistic(samples))}), flush=True)
    return 0


def _answer(child: subprocess.Popen, seconds: float = 0.0) -> dict:
    """The child's next line, as JSON, within ``ANSWER_SECONDS`` and four times a turn of ``seconds``; a
    RuntimeError (or ValueError) where not."""
    deadline = ANSWER_SECONDS + 4 * seconds
    if not select.select([child.stdout], [], [], deadline)[0]:
        raise RuntimeError(f"no answer in {deadline:g} s")
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"it exited with status {child.wait()}")
    return json.loads(line)


def _stop(child: subprocess.Popen) -> None:
    """End a child: its input closed, which ends its loop; killed if it has not ended a few seconds later."""
    try:
        child.stdin.close()
    except OSError:  # it died with our last request unread (Popen.communicate ignores this too)
        pass
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _start(args: list[str], started: list) -> subprocess.Popen:
    """A serving child, once it says it is ready; added to ``started``, which the caller stops."""
    child = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    started.append(child)
    if _answer(child).get("ready") is not True:
        raise RuntimeError(f"{' '.join(args)} did not start")
    return child


def _ask(child: subprocess.Popen, seconds: float) -> float:
    child.stdin.write(f"{seconds}\n")
    child.stdin.flush()
    return _answer(child, seconds)["speedup"]


def plain_speedups(turns: int = 3, seconds: float = 1.0, batch: int = BATCH) -> list[float]:
    """vmap's speedup over the loop on the tutorial's own code, by ``Timer`` in a plain process of its own
    (``persample_bench.tutorial``), one per turn: what the default job prints beside its own figure."""
    started = []
    try:
        child = _start(["-m", "persample_bench.tutorial", str(batch)], started)
        return [_ask(child, seconds) for _ in range(turns)]
    finally:
        for child in started:
            _stop(child)


def both(heap: str, timer: str, turns: int, seconds: float, progress=print) -> dict[str, float]:
    """``{"plain": speedup, "suite": speedup}``, each the median of ``turns`` turns taken in alternation."""
    started, found = [], {"plain": [], "suite": []}
    try:
        sides = {
            "plain": _start(["-m", "persample_bench.tutorial"], started),
            "suite": _start(
                ["-m", "persample_bench.crosscheck", "--serve-suite", "--heap", heap, "--timer", timer], started
            ),
        }
        for turn in range(turns):
            for name in sides if turn % 2 == 0 else reversed(sides):
                found[name].append(_ask(sides[name], seconds))
            progress(f"turn {turn + 1}/{turns}: " + ", ".join(f"{name} {found[name][-1]:.2f}x" for name in found))
    finally:
        for child in started:
            _stop(child)
    return {name: statistics.median(values) for name, values in found.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persample_bench.crosscheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--heap", choices=HEAP_POLICIES, default=DEFAULT_HEAP, help="the suite side's heap policy "
                        f"(default: {DEFAULT_HEAP}, the default job's)")  # fmt: skip
    parser.add_argument("--timer", choices=TIMERS, default=JOB_TIMER, help="the suite side's clock "
                        f"(default: {JOB_TIMER}, the default job's)")  # fmt: skip
    parser.add_argument("--turns", type=int, default=8, help="turns of each side (default: 8)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds of each turn (default: 1)")
    parser.add_argument("--tolerance", type=float, default=0.15, help="the two may differ by (default: 0.15)")
    parser.add_argument("--serve-suite", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_suite:
        return serve_suite(args.heap, args.timer)
    print(f"simple_cnn vmap over the loop, B={BATCH}, CPU, 1 torch thread; {args.turns} turns of {args.seconds:g} s")
    print("plain: the tutorial's code, torch.utils.benchmark.Timer, a plain process (wall clock, allocator as is)")
    print(f"suite: the default job's point, interleaved rounds ({args.timer} clock, heap {args.heap})")
    found = both(args.heap, args.timer, args.turns, args.seconds)
    difference = found["suite"] / found["plain"] - 1
    print(f"plain {found['plain']:.2f}x, suite {found['suite']:.2f}x: the suite's is {difference:+.1%}")
    agree = abs(difference) <= args.tolerance
    print("they agree" if agree else f"they differ by more than {args.tolerance:.0%}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
