"""The gate's verdict on stored runs, as data, and the text that tells it.

``judge_stored`` gates a candidate run against a baseline run as ``persample
compare`` does: refuses runs of other hardware or settings, learns the noise
between runs from the runs stored up to the baseline (``history.preceding``)
and judges every row (``gate.compare_runs``). It returns a ``Verdict``; the
command, ``--persample-gate`` (``persample_gate.pytest_plugin``) and the report
page each render that, and none of them reads printed text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from persample_bench.runformat import Run, software_changes
from persample_gate import history
from persample_gate.gate import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLDS,
    GROSS,
    MIN_HISTORY,
    PRIMARY_SHARE,
    Change,
    Pooled,
    compare_runs,
    format_changes,
    primary,
    shown_as,
)


@dataclass
class Verdict:
    """The gate on a candidate run against a baseline run, and what it judged with."""

    candidate: Run
    baseline: Run | None = None
    changes: list[Change] = field(default_factory=list)  # compare_runs' rows, regressions first; none if not compared
    learnt_from: int = 0  # comparable runs stored up to the baseline, that the noise between runs was learnt from
    unreadable: list[Path] = field(default_factory=list)  # stored runs left out of that, which cannot be read
    alpha: float = DEFAULT_ALPHA
    thresholds: dict = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    note: str = ""  # why it was not compared

    @property
    def regressions(self) -> list[Change]:
        return [change for change in self.changes if change.regressed]

    @property
    def known(self) -> bool:
        """Whether the noise between runs was known: below ``MIN_HISTORY`` runs only a gross slowdown is called."""
        return self.learnt_from >= MIN_HISTORY

    @property
    def outcome(self) -> str:
        """``regression``, ``ok`` or ``no verdict`` (too little history, and no gross slowdown)."""
        return "regression" if self.regressions else "ok" if self.known else "no verdict"


def judge_stored(baseline: Run, candidate: Run, *, thresholds=None, alpha: float = DEFAULT_ALPHA) -> Verdict:
    """``candidate`` gated against ``baseline`` as ``persample compare`` gates it; raises ``history.HistoryError``
    (``HardwareMismatch``, ``SettingsMismatch``, ``NumericsMismatch``) for runs that cannot be compared."""
    history.check_comparable(baseline, candidate)
    earlier, unreadable = history.preceding(baseline, candidate)
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    changes = compare_runs(baseline, candidate, alpha=alpha, history=earlier, thresholds=thresholds)
    return Verdict(candidate, baseline, changes, len(earlier), unreadable, alpha, thresholds)


def describe(verdict: Verdict) -> str:
    """``persample compare``'s output: the runs, the noise the rows were judged against, the rows and the verdict."""
    baseline, candidate = verdict.baseline, verdict.candidate
    lines = [
        f"baseline  {baseline.path} (commit {baseline.commit[:10]})",
        f"candidate {candidate.path} (commit {candidate.commit[:10]})",
        f"hardware  {baseline.machine.get('hardware_id')}, {baseline.machine.get('torch_threads')} torch thread(s), "
        f"{baseline.machine.get('timer', 'wall')} clock",
    ]
    if software := software_changes(baseline.machine, candidate.machine):
        lines.append(f"software  {software}")
    if verdict.known:
        lines.append(
            f"noise between runs ('run to run'): from the {verdict.learnt_from} runs stored up to the baseline"
        )
    else:
        lines.append(
            f"no verdict yet: the noise between runs on this hardware is learnt from {MIN_HISTORY} comparable runs "
            f"stored up to the baseline, and {verdict.learnt_from} are; store {MIN_HISTORY - verdict.learnt_from} "
            "more of unchanged code (tox -e bench), or measure both versions side by side now: persample ab <git "
            f"ref>. Until then only a speedup {1 + GROSS:g}x worse is called a regression."
        )
    if verdict.unreadable:
        lines.append(f"left out of the noise estimate, unreadable: {', '.join(str(p) for p in verdict.unreadable)}")
    return "\n".join([*lines, describe_rows(verdict.changes, alpha=verdict.alpha, thresholds=verdict.thresholds)])


def describe_rows(changes: list[Change], *, alpha: float, thresholds: dict) -> str:
    """How the rows were judged, their table and the count of regressions (also ``persample ab``'s)."""
    lines = [
        f"change: + is slower; regression: p over all {len(changes)} rows < {alpha} "
        f"and the change at least {thresholds['ratio']:.0%} (speedup) / {thresholds['time']:.0%} (time)"
    ]
    shares = f"; pooled speedup rows share {PRIMARY_SHARE:.0%} of {alpha}" if any(map(primary, changes)) else ""
    lines.append(
        f"'p, all rows': the row's p adjusted for all the rows (weighted Holm{shares}), so that unchanged code "
        f"fails the gate at most {alpha:.0%} of the time"
    )
    pooled = {c.point.weighted for c in changes if isinstance(c.point, Pooled)}
    if True in pooled:
        lines.append(
            "'weighted geomean of N' rows: a method over its N points both runs have, each weighted by "
            "1 / (its run-to-run spread)^2, against the spread of that mean between the stored runs"
        )
    if False in pooled:
        lines.append("'geomean of N' rows: a method over its N points, alike, tested as a point is")
    lines += ["", format_changes(changes)]
    regressions = [c for c in changes if c.regressed]
    lines += [
        f"{c.point.id}, {shown_as(c)}: weighs most "
        + ", ".join(f"{point} {weight:.0%}" for point, weight in c.point.weights[:3])
        for c in regressions
        if isinstance(c.point, Pooled)
    ]
    common = len({c.point for c in changes if not isinstance(c.point, Pooled)})
    lines.append(
        f"\n{len(regressions)} regression(s) in {common} common point(s)"
        + ("" if common else "; the runs share no point: were they made with the same sweep?")
    )
    return "\n".join(lines)
