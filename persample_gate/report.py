"""One page of the stored runs (``persample report``), and the list of them (``persample runs``).

The page shows, from every run stored: the newest run's summary table for
each hardware, the newest runs of all the hardware side by side (speedup and
time per sample against batch size, on shared axes), each method's speedup
across the runs with the gate's verdicts marked, and links to the raw runs.

Each run is judged as ``persample compare`` would judge it against the run
stored before it on the same hardware: ``compare_runs`` at the default
thresholds, the noise between runs learnt from the runs ``history.preceding``
finds up to that one (``verdicts.judge_stored``).

The page stands alone: figures inline as SVG with their text kept as text
(it can be searched, and read by a test), styles inline, no script, nothing
fetched when it is viewed. The links to the raw runs are relative to the
page, so the page and the storage folder move together. A run that cannot be
used is named on the page and on stderr with the reason, and left alone.
"""

from __future__ import annotations

import io
import os
import sys
from collections import defaultdict
from datetime import datetime
from html import escape
from pathlib import Path
from urllib.parse import quote

from persample_bench.runformat import HistoryError, Run, load
from persample_bench.summary import LEFT_ALIGNED, of_rounds, render, summary_rows
from persample_gate import history, plots
from persample_gate.gate import MIN_HISTORY, format_changes
from persample_gate.verdicts import Verdict, judge_stored

GENERATOR = "persample report"  # in the page's <meta name="generator">: a page this command may rewrite


def hardware_of(run: Run) -> str:
    return run.machine.get("hardware_id", "unknown hardware")


def survey(storage) -> tuple[list[Run], list[str]]:
    """Every run stored under ``storage`` that can be used, in ``history.stored``'s order (oldest first, as the gate
    takes them), and one line for each left out (what ``load`` refuses: a half-written file, a plain
    pytest-benchmark run without this suite's machine info), saying why."""
    runs, left_out = [], []
    for path in history.stored(storage):
        try:
            runs.append(load(path))
        except HistoryError as err:
            left_out.append(str(err))
    return runs, left_out


def by_hardware(runs: list[Run]) -> dict[str, list[Run]]:
    """``runs`` by hardware, in their order."""
    groups = defaultdict(list)
    for run in runs:
        groups[hardware_of(run)].append(run)
    return dict(sorted(groups.items()))


RUN_HEADER = ("run", "date", "commit", "hardware", "points", "file")


def run_row(run: Run) -> tuple:
    """A run as ``persample runs`` and the page list it: ``RUN_HEADER``."""
    return run.id, run.time[:16].replace("T", " "), run.commit[:10], hardware_of(run), len(run.samples), run.path


def list_runs(storage) -> int:
    """``persample runs``: a table of the stored runs, oldest first, and a line on stderr for each left out."""
    runs, left_out = survey(storage)
    if runs:
        print(render(RUN_HEADER, [run_row(run) for run in runs], left=len(RUN_HEADER)))
    for line in left_out:
        print(f"left out: {line}", file=sys.stderr)
    if not runs and not left_out:
        raise history.NoBaseline(f"no stored runs under {storage}; store one with: tox -e bench")
    return 0


def verdicts_of(runs: list[Run]) -> list[Verdict]:
    """Each of ``runs`` (one hardware, oldest first) gated against the one before it, as ``persample compare``."""
    said = [Verdict(runs[0], note="the first run of this hardware: nothing to compare with")] if runs else []
    for before, after in zip(runs, runs[1:]):
        try:
            said.append(judge_stored(before, after))  # unreadable runs are named among the runs left out
        except HistoryError as err:
            said.append(Verdict(after, before, note=f"not compared: {err}"))
    return said


def svg(fig, name: str) -> str:
    """``fig`` as an inline ``<svg>`` element: text as text, ids salted by ``name`` (unique on the page), no
    metadata (matplotlib's names URLs)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buffer, format="svg", metadata={key: None for key in ("Creator", "Date", "Format", "Type")})
    plots.pyplot().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _table(header, rows, *, left: int, cls: str, raw=()) -> str:
    """An HTML table; the first ``left`` columns left-aligned (names), the rest right-aligned (figures). Cells in the
    columns ``raw`` are HTML already."""

    def cell(tag, i, value):
        text = str(value) if i in raw else escape(str(value))
        return f'<{tag} class="{"name" if i < left else "figure"}">{text}</{tag}>'

    head = "".join(cell("th", i, value) for i, value in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, value) for i, value in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(fig, name: str, caption: str) -> str:
    return f'<figure id="{name}">{svg(fig, name)}<figcaption>{escape(caption)}</figcaption></figure>'


def _anchor(hardware: str) -> str:
    return "hw-" + quote(hardware, safe="")


def _summary(run: Run) -> str:
    medians, interleaved = of_rounds(run.samples, run.baseline_rounds)
    memory = {
        point: (extra.get("peak_memory_bytes"), extra.get("gradient_bytes")) for point, extra in run.extra.items()
    }
    header, rows = summary_rows(medians, memory, baseline=run.baseline, floor_name=run.floor, interleaved=interleaved)
    return _table(header, rows, left=LEFT_ALIGNED, cls="summary")


def _verdict_cell(verdict: Verdict) -> str:
    """A run's verdict: the rows flagged, and every row on demand, as ``persample compare`` prints them."""
    if verdict.note or not verdict.changes:
        return f'<span class="not-compared">{escape(verdict.note or "no point in common with the run before")}</span>'
    every = f"<details><summary>every row</summary><pre>{escape(format_changes(verdict.changes))}</pre></details>"
    if verdict.regressions:
        return (
            f'<span class="regression">REGRESSION in {len(verdict.regressions)} of {len(verdict.changes)} rows</span>'
            f"<pre>{escape(format_changes(verdict.regressions))}</pre>{every}"
        )
    return f'<span class="ok">ok ({len(verdict.changes)} rows)</span>{every}'


def _noise(verdict: Verdict) -> str:
    if not verdict.changes:
        return "-"
    if verdict.learnt_from >= MIN_HISTORY:
        return f"from {verdict.learnt_from} runs"
    return f"no verdict yet ({verdict.learnt_from} of {MIN_HISTORY} runs)"


def _history(hardware: str, runs: list[Run], verdicts: list[Verdict]) -> str:
    name = f"history-{_anchor(hardware)}"
    figure = _figure(
        plots.history_figure_of(runs, [v.changes for v in verdicts]),
        name,
        f"each method's speedup across the {len(runs)} runs of {hardware}, oldest first; against the run before, "
        "a red cross marks a point whose speedup the gate flagged, an orange ring one whose time it flagged, a band "
        "a method it flagged on its pooled points",
    )
    rows = [
        (
            *run_row(verdict.candidate)[:3],
            verdict.baseline.id if verdict.baseline else "-",
            _noise(verdict),
            _verdict_cell(verdict),
        )
        for verdict in verdicts
    ]
    header = ("run", "date", "commit", "against", "noise between runs", "the gate's verdict")
    return figure + _table(header, rows, left=len(header), cls="verdicts", raw=(5,))


def _section(hardware: str, runs: list[Run], verdicts: list[Verdict]) -> str:
    newest = runs[-1]
    settings = f"{newest.machine.get('torch_threads')} torch thread(s), {newest.machine.get('timer', 'wall')} clock"
    return (
        f'<section class="hardware" id="{_anchor(hardware)}"><h2>{escape(hardware)}</h2>'
        f"<h3>Newest run: {escape(newest.id)}, {escape(run_row(newest)[1])}, commit "
        f"{escape(newest.commit[:10])} ({escape(settings)})</h3>{_summary(newest)}"
        f"<h3>History</h3>{_history(hardware, runs, verdicts)}</section>"
    )


def _link(run: Run, page: Path) -> str:
    target = os.path.relpath(run.path.resolve(), page.parent.resolve())
    return f'<a href="{escape(quote(Path(target).as_posix()))}">{escape(run.name)}</a>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { padding: 0.15em 0.7em; border-bottom: 1px solid #ddd; white-space: nowrap; vertical-align: top; }
td:last-child { white-space: normal; }
th { background: #f3f3f3; }
.name { text-align: left; } .figure { text-align: right; font-variant-numeric: tabular-nums; }
table.verdicts td:last-child { text-align: left; }
.regression { color: #b00; font-weight: bold; } .ok { color: #070; } .not-compared { color: #666; }
#left-out li { background: #fff4d6; padding: 0.2em 0.5em; margin: 0.2em 0; font-family: monospace; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
pre { font-size: 0.8em; overflow-x: auto; margin: 0.2em 0; max-width: 60vw; }
"""


def page(storage, runs: list[Run], left_out: list[str], out: Path) -> str:
    """The HTML of the page that ``out`` will hold, of what ``survey(storage)`` found."""
    groups = by_hardware(runs)
    newest = [group[-1] for group in groups.values()]
    parts = [
        f"<h1>persample: {len(runs)} stored run(s) on {len(groups)} hardware</h1>",
        f"<p>From <code>{escape(str(storage))}</code>, written {datetime.now():%Y-%m-%d %H:%M}. Speedups are over "
        "the loop (in a run of the dp sweep, the non-private step), measured interleaved with it; the gate's "
        "verdicts are those of <code>persample compare</code> "
        "of each run against the one before it on the same hardware, at its default thresholds. Until "
        f"{MIN_HISTORY} runs are stored before a comparison, the noise between runs is not known and the gate gives "
        "no verdict, but for a speedup 2x worse (<code>persample ab</code> answers at once).</p>",
    ]
    if left_out:
        items = "".join(f"<li>{escape(line)}</li>" for line in left_out)
        parts.append(f'<section id="left-out"><h2>Left out</h2><ul>{items}</ul></section>')
    hardware_rows = [
        (
            f'<a href="#{_anchor(hardware)}">{escape(hardware)}</a>',
            group[-1].machine.get("cpu_model", "?"),
            group[-1].machine.get("gpu_name") or "-",
            group[-1].machine.get("torch_version", "?"),
            len(group),
            run_row(group[-1])[1],
        )
        for hardware, group in groups.items()
    ]
    parts.append(
        '<section id="hardware"><h2>Hardware</h2>'
        + _table(("hardware", "CPU", "GPU", "torch", "runs", "newest run"), hardware_rows, left=4, cls="hw", raw=(0,))
        + "</section>"
    )
    side = "".join(
        _figure(fig, f"side-by-side-{workload}", f"{workload}: the newest run of each hardware")
        for workload, fig in plots.hardware_figures(newest)
    )
    parts.append(f'<section id="side-by-side"><h2>Every hardware side by side</h2>{side}</section>')
    parts += [_section(hardware, group, verdicts_of(group)) for hardware, group in groups.items()]
    rows = [(*run_row(run)[:-1], _link(run, out)) for run in runs]
    parts.append(
        '<section id="runs"><h2>Raw runs</h2><p>The pytest-benchmark JSON files, with every round.</p>'
        + _table(RUN_HEADER, rows, left=len(RUN_HEADER), cls="runs", raw=(5,))
        + "</section>"
    )
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="generator" content="{GENERATOR}">'
        f"<title>persample: stored runs</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    return html


def write(storage, out) -> int:
    """``persample report``: write the page to ``out``; name the runs left out on stderr."""
    out = Path(out)
    if out.exists() and f'content="{GENERATOR}"' not in out.read_text(errors="replace"):
        raise HistoryError(f"{out} exists and is not a page of persample report; pass another --out")
    plots.pyplot()  # without matplotlib: one line saying how to install it, before any work
    runs, left_out = survey(storage)
    for line in left_out:
        print(f"left out: {line}", file=sys.stderr)
    if not runs:
        if left_out:
            raise HistoryError(f"no usable run under {storage}: each stored run is left out (above)")
        raise history.NoBaseline(f"no stored runs under {storage}; store one with: tox -e bench")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(storage, runs, left_out, out))
    print(out)
    return 0
