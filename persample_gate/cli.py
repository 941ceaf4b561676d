"""The ``persample`` command: compare stored runs, list and plot them, measure the gate.

Exit codes of ``persample compare``: 0 no regression, 1 regression,
2 unusable input (missing, corrupt or unknown run, or two runs timed with
different threads or clocks), 3 no baseline yet (the first run on new
hardware: normal, not a failure), 4 runs from different hardware, 5 a
measuring process failed (``persample sensitivity``).
"""

from __future__ import annotations

import argparse
import sys

from persample_gate import history, sensitivity, workers
from persample_gate.gate import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLDS,
    MIN_HISTORY,
    PRIMARY_SHARE,
    SHOWN_AS,
    Pooled,
    compare_runs,
    format_changes,
    primary,
)
from persample_gate.machine import this_hardware_id

OK, REGRESSION, BAD_INPUT, NO_BASELINE, OTHER_HARDWARE, MEASUREMENT_FAILED = 0, 1, 2, 3, 4, 5
EXIT_CODES = {
    history.NoBaseline: NO_BASELINE,
    history.HardwareMismatch: OTHER_HARDWARE,
    history.HistoryError: BAD_INPUT,
}


def _fraction(text: str) -> float:
    value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    if not 0 < value < 10:
        raise argparse.ArgumentTypeError(f"{text!r} is not a threshold; give a fraction such as 0.1 or 10%")
    return value


def compare(args) -> int:
    if args.baseline and args.candidate:
        paths = history.resolve(args.baseline, args.storage), history.resolve(args.candidate, args.storage)
    else:
        previous, newest = history.latest_two(args.storage, this_hardware_id())
        paths = (history.resolve(args.baseline, args.storage), newest) if args.baseline else (previous, newest)
    baseline, candidate = (history.load(path) for path in paths)
    history.check_comparable(baseline, candidate)
    earlier, unreadable = history.preceding(baseline, candidate)
    changes = compare_runs(
        baseline,
        candidate,
        alpha=args.alpha,
        history=earlier,
        thresholds={"ratio": args.threshold_ratio, "time": args.threshold_time},
    )
    regressions = [c for c in changes if c.regressed]
    print(f"baseline  {baseline.path} (commit {baseline.commit[:10]})")
    print(f"candidate {candidate.path} (commit {candidate.commit[:10]})")
    print(
        f"hardware  {baseline.machine.get('hardware_id')}, {baseline.machine.get('torch_threads')} torch thread(s), "
        f"{baseline.machine.get('timer', 'wall')} clock"
    )
    print(
        f"change: + is slower; regression: p over all {len(changes)} rows < {args.alpha} "
        f"and the interval reaches {args.threshold_ratio:.0%} (speedup) / {args.threshold_time:.0%} (time)"
    )
    shares = f"; pooled speedup rows share {PRIMARY_SHARE:.0%} of {args.alpha}" if any(map(primary, changes)) else ""
    print(
        f"'p, all rows': the row's p adjusted for all the rows (weighted Holm{shares}), so that unchanged code "
        f"fails the gate at most {args.alpha:.0%} of the time"
    )
    if len(earlier) >= MIN_HISTORY:
        print(f"noise between runs ('run to run'): from the {len(earlier)} runs stored up to the baseline")
    else:
        print(
            f"noise between runs: not known yet ({len(earlier)} comparable run(s) stored up to the baseline, "
            f"{MIN_HISTORY} needed); verdicts rest on the rounds alone, so a shift between runs can pass for a "
            "regression: rerun a flagged point"
        )
    if any(isinstance(c.point, Pooled) for c in changes):
        print(
            "'weighted geomean of N' rows: a method over its N points both runs have, each weighted by "
            "1 / (its run-to-run spread)^2, against the spread of that mean between the stored runs"
        )
    if unreadable:
        print(f"left out of the noise estimate, unreadable: {', '.join(str(path) for path in unreadable)}")
    print()
    print(format_changes(changes))
    for change in regressions:
        if isinstance(change.point, Pooled):
            print(
                f"{change.point.id}, {SHOWN_AS[change.metric]}: weighs most "
                + ", ".join(f"{point} {weight:.0%}" for point, weight in change.point.weights[:3])
            )
    common = len({c.point for c in changes if not isinstance(c.point, Pooled)})
    print(
        f"\n{len(regressions)} regression(s) in {common} common point(s)"
        + ("" if common else "; the runs share no point: were they made with the same sweep?")
    )
    return REGRESSION if regressions else OK


def runs(args) -> int:
    from persample_gate import report

    return report.list_runs(args.storage)


def report(args) -> int:
    from persample_gate import report

    return report.write(args.storage, args.out)


def plot(args) -> int:
    from pathlib import Path

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
    parser.add_argument(
        "--storage", default=history.DEFAULT_STORAGE, help="where runs are stored (default: .benchmarks)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("compare", help="gate a candidate run against a baseline run")
    p.add_argument(
        "baseline", nargs="?", help="saved run id (e.g. 0003) or JSON path; default: the run before the newest"
    )
    p.add_argument("candidate", nargs="?", help="saved run id or JSON path; default: the newest run on this hardware")
    p.add_argument(
        "--threshold-ratio",
        type=_fraction,
        default=DEFAULT_THRESHOLDS["ratio"],
        help="slowdown of the time ratio to loop that counts (default: 0.10)",
    )
    p.add_argument(
        "--threshold-time",
        type=_fraction,
        default=DEFAULT_THRESHOLDS["time"],
        help="slowdown of absolute time that counts (default: 0.10)",
    )
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="significance level (default: 0.01)")
    p.set_defaults(run=compare)

    p = commands.add_parser("plot", help="figures (PNG and SVG) of the newest run and of the history")
    p.add_argument(
        "runs",
        nargs="*",
        help="saved run ids or JSON paths, oldest first; default: every stored run "
        "of this hardware (the newest is plotted, all make the history)",
    )
    p.add_argument("--out", default="plots", help="folder for the figures (default: plots)")
    p.set_defaults(run=plot)

    # Its options are its own (persample sensitivity --help): handed over as they are.
    commands.add_parser("sensitivity", add_help=False, help="how small a slowdown the gate catches (minutes)")

    p = commands.add_parser("runs", help="list stored runs, oldest first")
    p.set_defaults(run=runs)

    p = commands.add_parser(
        "report", help="one HTML page of every stored run: hardware side by side, history with the gate's verdicts"
    )
    p.add_argument("--out", default="report.html", help="the page to write (default: report.html)")
    p.set_defaults(run=report)

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


if __name__ == "__main__":
    sys.exit(main())
