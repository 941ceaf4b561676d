"""``--persample-gate``: the session's stored run gated against the run stored before it on its hardware.

A pytest plugin of its own (``pytest11`` entry point ``persample-gate``,
pyproject.toml), beside the harness's (``persample_bench.plugin``): the harness
times and stores; this reads what pytest-benchmark stored, as ``persample
compare`` reads it (``verdicts.judge_stored``), and sets the exit status from
the verdict it returns. Without the option it does nothing, and it imports no
torch either way.

The candidate is the run this session stored (pytest-benchmark saves it in its
own ``pytest_sessionfinish``, before this hook's wrapper resumes); the baseline
the newest stored before the session on the same hardware, as the run records
it, so nothing here needs to detect the hardware.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BEFORE = pytest.StashKey[frozenset]()  # the runs stored when the session started


def pytest_addoption(parser):
    from persample_bench.runformat import OPTIONS_GROUP

    parser.getgroup(*OPTIONS_GROUP).addoption(
        "--persample-gate",
        action="store_true",
        help="store this run and gate it against the newest run stored before it on this hardware "
        "(persample compare, default thresholds): exit status 1 on a regression",
    )


def _gating(config) -> bool:
    return config.getoption("persample_gate") and hasattr(config.option, "benchmark_storage")


def pytest_configure(config):
    if _gating(config) and not (config.option.benchmark_autosave or config.option.benchmark_save):
        config.option.benchmark_autosave = True


def _storage(config) -> Path:
    return Path(config.option.benchmark_storage.removeprefix("file://"))


def pytest_sessionstart(session):
    if _gating(session.config):
        from persample_gate import history

        session.config.stash[BEFORE] = frozenset(history.stored(_storage(session.config)))


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session):
    yield
    if BEFORE in session.config.stash:
        status, report = gate_session(_storage(session.config), session.config.stash[BEFORE])
        terminal = session.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.section("persample gate")
            terminal.write_line(report)
        if status is not None:
            session.exitstatus = status


def gate_session(storage: Path, before: frozenset) -> tuple[pytest.ExitCode | None, str]:
    """(the session's exit status, or None to leave it; what to print) of the run stored since ``before``."""
    from persample_gate import history, verdicts

    new = [path for path in history.stored(storage) if path not in before and history.header(path)[1]]
    if not new:
        return None, "nothing to gate: this run stored no timed persample point"
    earlier = [path for path in history.stored(storage, history.header(new[-1])[1]) if path in before]
    if not earlier:
        return None, f"no baseline yet on this hardware: {new[-1].name} is the baseline for the next run"
    try:
        verdict = verdicts.judge_stored(history.load(earlier[-1]), history.load(new[-1]))
    except history.HistoryError as err:  # the baseline cannot be read, or was timed differently
        return pytest.ExitCode.USAGE_ERROR, f"persample: {err}"
    failed = pytest.ExitCode.TESTS_FAILED if verdict.outcome == "regression" else None
    return failed, verdicts.describe(verdict)
