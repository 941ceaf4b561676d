"""The ``persample`` command: time the suite or one model, compare stored runs, list and plot them, measure the gate.

``persample bench`` and ``persample check`` run the harness in a process of its
own (``pytest --pyargs persample_bench.suite``, ``python -m
persample_bench.check``): this command imports no torch.

Exit codes of ``persample compare``: 0 no regression, 1 regression,
2 unusable input (missing, corrupt or unknown run, or two runs computed with
different numerics, or timed with different threads, clocks or heaps), 3 no verdict yet (fewer than 5
comparable runs stored, none on new hardware: too little history to know
the noise between runs; neither ok nor a failure), 4 runs from different
hardware, 5 a measuring process failed (``persample sensitivity``).
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import time
from pathlib import Path

from persample_bench.runformat import (
    DEFAULT_HEAP,
    HEAPS,
    TIMERS,
    batch_sizes,
    positive,
    software_changes,
    this_hardware_id,
)
from persample_gate import ab, gate, history, sensitivity, verdicts, workers
from persample_gate.gate import DEFAULT_ALPHA, DEFAULT_THRESHOLDS

STORAGE_HELP = "where runs are stored (default: .benchmarks), before or after the command"
OK, REGRESSION, BAD_INPUT, NO_VERDICT, OTHER_HARDWARE, MEASUREMENT_FAILED = 0, 1, 2, 3, 4, 5
NO_GIT, UNUSABLE, INTERRUPTED = 6, 7, 130
EXIT_CODES = {
    ab.NoGit: NO_GIT,
    ab.BaselineUnusable: UNUSABLE,
    history.NoBaseline: NO_VERDICT,
    history.HardwareMismatch: OTHER_HARDWARE,
    history.HistoryError: BAD_INPUT,
}
OUTCOME_CODES = {"regression": REGRESSION, "ok": OK, "no verdict": NO_VERDICT}  # of a verdicts.Verdict


def _fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        value = -1.0
    if not 0 < value < 10:
        raise argparse.ArgumentTypeError(f"{text!r} is not a threshold; give a fraction such as 0.1 or 10%")
    return value


def _count(least: int):
    def parse(text: str) -> int:
        if not text.isdecimal() or int(text) < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least {least}")
        return int(text)

    return parse


def _judging(parser, ratio: float = DEFAULT_THRESHOLDS["ratio"], why: str = "") -> None:
    """The options of a verdict: thresholds (``ratio``: the speedup's default, ``why`` it is that) and alpha."""
    parser.add_argument(
        "--threshold-ratio",
        type=_fraction,
        default=ratio,
        help=f"slowdown of the time ratio to loop that counts: a regression is a significant change estimated at "
        f"least this large (default: {ratio:.2f}{why})",
    )
    parser.add_argument(
        "--threshold-time",
        type=_fraction,
        default=DEFAULT_THRESHOLDS["time"],
        help="slowdown of absolute time that counts (default: 0.10)",
    )
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="significance level (default: 0.01)")


def compare(args) -> int:
    if args.baseline and args.candidate:
        paths = history.resolve(args.baseline, args.storage), history.resolve(args.candidate, args.storage)
    else:
        previous, newest = history.latest_two(args.storage, this_hardware_id())
        paths = (history.resolve(args.baseline, args.storage), newest) if args.baseline else (previous, newest)
    baseline, candidate = (history.load(path) for path in paths)
    thresholds = {"ratio": args.threshold_ratio, "time": args.threshold_time}
    verdict = verdicts.judge_stored(baseline, candidate, thresholds=thresholds, alpha=args.alpha)
    print(verdicts.describe(verdict))
    return OUTCOME_CODES[verdict.outcome]


def ab_command(args) -> int:
    if args.points and args.workload:
        raise history.HistoryError("name --points or --workload, not both: --workload's points are vmap at each batch")
    if args.batch_sizes is not None and not args.workload:
        raise history.HistoryError("--batch-sizes are --workload's; name the workload, or points with --points")
    if args.workload:
        points = ab.workload_points(args.workload, args.batch_sizes or ab.WORKLOAD_BATCH_SIZES)
    elif args.points:
        points = [ab.parse_point(text) for text in args.points]
    else:
        points = list(ab.DEFAULT_POINTS)
    if args.ref is None and args.baseline_python is None:
        raise history.HistoryError("name a baseline: a git ref (persample ab main) or --baseline-python PATH")
    if args.save is not None and Path(args.save).exists():
        raise history.HistoryError(f"{args.save} exists: pass another --save file, nothing is overwritten")
    request = {
        "points": [p.fields for p in points],
        "threads": args.threads,
        "timer": args.timer,
        "heap": args.heap,
    }
    started = time.perf_counter()
    with ab.sides(args.ref, args.baseline_python, Path.cwd()) as (a, b):
        if args.workload and not ab.resolves_specs(a):
            raise ab.BaselineUnusable(
                f"the baseline, {a.said}, predates workloads named by MODULE:FUNCTION or a registered name; name "
                "a later ref for --workload"
            )
        print(f"baseline  A: {a.said}, {a.python}", flush=True)
        print(f"candidate B: {b.said}, {b.python}", flush=True)
        print(f"harness   today's persample_bench ({ab.todays_harness()}) on both sides", flush=True)
        print(
            f"pairs     {args.pairs} pairs of processes, A and B alive together taking turns (A B, then B A) "
            f"at each of {len(points)} point(s), {args.seconds:g} s a point in each",
            flush=True,
        )
        answers = ab.run(
            (a, b), request, args.pairs, args.seconds, progress=lambda line: print(line, file=sys.stderr, flush=True)
        )
    if args.save is not None:
        ab.save(Path(args.save), answers, request)
    machine = answers["B"][0]["machine"]
    print(
        f"hardware  {machine['hardware_id']}, {args.threads} torch thread(s), {args.timer} clock of CPU points, "
        f"heap {args.heap}; torch {machine['torch_version']}; {time.perf_counter() - started:.0f} s"
    )
    if software := software_changes(answers["A"][0]["machine"], machine):
        print(f"software  {software}")
    print(
        f"noise between processes ('run to run'): measured in this run, the spread of one pair's difference B - A "
        f"(paired Student's t on {args.pairs - 1} degrees of freedom)"
    )
    thresholds = {"ratio": args.threshold_ratio, "time": args.threshold_time}
    changes = gate.judge(ab.changes_of(answers), thresholds=thresholds, alpha=args.alpha)
    print(verdicts.describe_rows(changes, alpha=args.alpha, thresholds=thresholds))
    return REGRESSION if any(change.regressed for change in changes) else OK


# persample's pytest options, which ``persample bench`` takes without their prefix (--workload: --persample-workload).
BENCH_OPTIONS = ("sweep", "methods", "workload", "batch-sizes", "dtype", "device", "precision", "max-time", "threads",
                 "timer", "heap", "gate")  # fmt: skip
BENCH_USAGE = """usage: persample bench [--workload SPEC ...] [--batch-sizes B,B,...] [--sweep S] [--methods M,...]
                       [--dtype T,...] [--device D ...] [pytest and pytest-benchmark options]

The shipped pytest-benchmark suite, from any folder: pytest --pyargs persample_bench.suite --benchmark-only
--benchmark-autosave, runs stored under .benchmarks/ as tox -e bench stores them. persample's options are named
without their --persample- prefix (pytest --help lists them under "persample"); any other option goes to pytest
as it is: -k vmap, --benchmark-json FILE, --persample-gate ...

  --workload SPEC   a built-in, a registered name, or MODULE:FUNCTION (make(batch_size, device, dtype, seed) ->
                    (model, loss_fn, inputs, targets)); repeatable
  --batch-sizes     e.g. 4,16 (default: the sweep's, or the workload's own)
  --sweep S         mission (default), quick, full, or dp: the DP-SGD step by each DP method against the
                    non-private step (--methods ghost,vmap names DP methods there)
"""


def bench_arguments(rest: list[str]) -> list[str]:
    """``persample bench``'s arguments as pytest's: persample's options given their prefix, the rest as they are."""
    given = []
    for arg in rest:
        name, equals, value = arg.partition("=")
        if name.startswith("--") and name[2:] in BENCH_OPTIONS:
            arg = f"--persample-{name[2:]}{equals}{value}"
        given.append(arg)
    return given


def harness(module_args: list[str]) -> int:
    """The harness run as ``python -m MODULE_ARGS`` in this environment, its output as it comes; its exit status."""
    try:
        return subprocess.run([sys.executable, "-m", *module_args]).returncode
    except KeyboardInterrupt:
        return INTERRUPTED


PYTEST_USAGE_ERROR = 4  # pytest.ExitCode.USAGE_ERROR: a bad option or workload, before anything is timed


def bench(rest: list[str]) -> int:
    """pytest's exit status, but for its usage error: bad input, so 2, as every persample command says it."""
    if rest[:1] in (["-h"], ["--help"]):
        print(BENCH_USAGE)
        return OK
    code = harness(
        ["pytest", "--pyargs", "persample_bench.suite", "-p", "no:cacheprovider", "--benchmark-only",
         "--benchmark-autosave", *bench_arguments(rest)]
    )  # fmt: skip
    return BAD_INPUT if code == PYTEST_USAGE_ERROR else code


def runs(args) -> int:
    from persample_gate import report

    return report.list_runs(args.storage)


def write_report(args) -> int:
    from persample_gate import report

    return report.write(args.storage, args.out)


def plot(args) -> int:
    from persample_gate import plots

    paths = history.named_or_here(args.runs, args.storage)
    if not paths:
        raise history.NoBaseline(f"no stored runs of this hardware under {args.storage}; store one with: tox -e bench")
    runs = [history.load(path) for path in paths]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in plots.sweep_figures(runs[-1], out) + plots.history_figure(runs, out):
        print(path)
    return OK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="persample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage", default=history.DEFAULT_STORAGE, help=STORAGE_HELP)
    # --storage after the subcommand too (persample compare --storage X); SUPPRESS keeps the one given before.
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--storage", default=argparse.SUPPRESS, help=STORAGE_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser = functools.partial(commands.add_parser, parents=[where])

    p = add_parser("compare", help="gate a candidate run against a baseline run")
    p.add_argument(
        "baseline", nargs="?", help="saved run id (e.g. 0003) or JSON path; default: the run before the newest"
    )
    p.add_argument("candidate", nargs="?", help="saved run id or JSON path; default: the newest run on this hardware")
    _judging(p, why=": runs stored apart differ by 5-13%%; persample ab resolves a few per cent")
    p.set_defaults(run=compare)

    p = add_parser("plot", help="figures (PNG and SVG) of the newest run and of the history")
    p.add_argument(
        "runs",
        nargs="*",
        help="saved run ids or JSON paths, oldest first; default: every stored run "
        "of this hardware (the newest is plotted, all make the history)",
    )
    p.add_argument("--out", default="plots", help="folder for the figures (default: plots)")
    p.set_defaults(run=plot)

    # Their options are their own (persample sensitivity --help, ...): handed over as they are.
    add_parser("sensitivity", add_help=False, help="how small a slowdown the gate catches (minutes)")
    add_parser(
        "bench", add_help=False, help="time the suite, or your model (--workload MODULE:FUNCTION), and store the run"
    )
    add_parser(
        "check",
        add_help=False,
        help="every method on your model: correct against float64 or declined, time, memory, a recommendation",
    )

    p = add_parser("runs", help="list stored runs, oldest first")
    p.set_defaults(run=runs)

    p = add_parser(
        "report", help="one HTML page of every stored run: hardware side by side, history with the gate's verdicts"
    )
    p.add_argument("--out", default="report.html", help="the page to write (default: report.html)")
    p.set_defaults(run=write_report)

    p = add_parser(
        "ab",
        help="measure a baseline and the working tree side by side now, in pairs of processes taking turns (~3 min)",
        description=ab.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ref", nargs="?", help="git ref whose persample_core is the baseline (e.g. main, HEAD~3)")
    p.add_argument("--baseline-python", metavar="PATH", help="run the baseline with this Python (another torch)")
    p.add_argument(
        "--points",
        nargs="+",
        metavar="ID",
        help="points to compare, e.g. mlp-vmap-B64-cpu "
        f"(default: {', '.join(point.id for point in ab.DEFAULT_POINTS)})",
    )
    p.add_argument(
        "--workload",
        action="append",
        metavar="SPEC",
        help="your model: MODULE:FUNCTION (its module on PYTHONPATH or in the folder ab is started in) or a "
        "registered name; "
        "its points are vmap against the loop on the cpu at each of --batch-sizes; repeatable",
    )
    p.add_argument(
        "--batch-sizes",
        type=batch_sizes,
        default=None,
        metavar="B,B,...",
        help=f"--workload's batch sizes (default: {','.join(map(str, ab.WORKLOAD_BATCH_SIZES))})",
    )
    p.add_argument(
        "--pairs",
        type=_count(3),
        default=ab.DEFAULT_PAIRS,
        help=f"pairs of processes, at least 3: with two, the t test has one degree of freedom and flags only "
        f"changes of several times the noise (default: {ab.DEFAULT_PAIRS})",
    )
    p.add_argument(
        "--seconds",
        type=positive,
        default=ab.DEFAULT_SECONDS,
        help=f"seconds each point is timed in each process, in turns of {ab.SLICE:g} s "
        f"(default: {ab.DEFAULT_SECONDS:g})",
    )
    p.add_argument("--threads", type=_count(1), default=1, help="torch threads (default: 1)")
    p.add_argument(
        "--timer",
        choices=TIMERS,
        default="cpu",
        help="clock of CPU points (default: cpu, with one thread: what ab's pairs were studied on, and the clock a "
        "shared machine moves least; the pytest suite's --persample-timer defaults to wall, what a plain program "
        "measures)",
    )
    p.add_argument(
        "--heap",
        choices=HEAPS,
        default=DEFAULT_HEAP,
        help="heap policy (default: kept, as the pytest suite's: on the system allocator the host's paging and the "
        "allocator's history move a call's time by more than the change ab resolves)",
    )
    _judging(
        p,
        ratio=ab.THRESHOLD_RATIO,
        why=": pairs taking turns measure a change within about 1%%, runs stored apart within 5-13%%",
    )
    p.add_argument("--save", metavar="FILE", help="also write every worker's rounds to FILE (JSON)")
    p.set_defaults(run=ab_command)

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # their arguments are the harness's, as they are: argparse would reorder them
        return bench(argv[1:])
    if argv[:1] == ["check"]:
        return harness(["persample_bench.check", *argv[1:]])
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "sensitivity":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return sensitivity.main(rest, args.storage) if args.command == "sensitivity" else args.run(args)
    except history.HistoryError as err:
        print(f"persample: {err}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES.items() if isinstance(err, kind))
    except workers.WorkerFailed as err:
        print(f"persample: {err}", file=sys.stderr)
        return BAD_INPUT if err.refused else MEASUREMENT_FAILED
    except KeyboardInterrupt:
        print(
            f"persample {args.command}: interrupted; nothing was stored, no process or temporary folder is left",
            file=sys.stderr,
        )
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
