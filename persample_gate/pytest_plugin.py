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
GATED = pytest.StashKey[str]()  # what the gate found, printed after the tables


def pytest_addoption(parser):
    from persample_bench.runformat import OPTIONS_GROUP

    parser.getgroup(*OPTIONS_GROUP).addoption(
        "--persample-gate",
        action="store_true",
        help="store this run and gate it against the newest run stored before it on this hardware "
        "(persample compare, default thresholds): exit status 1 on a regression",
    )


def pytest_configure(config):
    if not config.getoption("persample_gate"):
        return
    option = config.option
    if not hasattr(option, "benchmark_storage"):
        raise pytest.UsageError("--persample-gate gates what pytest-benchmark stores: pip install pytest-benchmark")
    if option.benchmark_disable:
        raise pytest.UsageError("--persample-gate needs timed points: drop --benchmark-disable")
    if not option.benchmark_storage.startswith("file://"):
        raise pytest.UsageError(
            f"--persample-gate reads stored runs from a folder, not {option.benchmark_storage}: "
            "pass --benchmark-storage=file://DIR"
        )
    if not (option.benchmark_autosave or option.benchmark_save):
        option.benchmark_autosave = True


def _storage(config) -> Path:
    return Path(config.option.benchmark_storage.removeprefix("file://"))


def pytest_sessionstart(session):
    if session.config.getoption("persample_gate"):
        from persample_gate import history

        session.config.stash[BEFORE] = frozenset(history.stored(_storage(session.config)))


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session):
    """Gated here, where pytest-benchmark has stored the run (its own ``pytest_sessionfinish``); printed by
    ``pytest_terminal_summary``, after its tables. A regression fails a session that passed; it does not
    replace the status of one that had already failed or been interrupted."""
    yield
    if BEFORE in session.config.stash:
        status, session.config.stash[GATED] = gate_session(_storage(session.config), session.config.stash[BEFORE])
        if status is not None and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = status


@pytest.hookimpl(hookwrapper=True)
def pytest_terminal_summary(terminalreporter, config):
    yield  # after every plugin's summary: pytest-benchmark's tables, the persample summary
    if GATED in config.stash:
        terminalreporter.section("persample gate")
        terminalreporter.write_line(config.stash[GATED])


def gate_session(storage: Path, before: frozenset) -> tuple[pytest.ExitCode | None, str]:
    """(the session's exit status, or None to leave it; what to print) of the run stored since ``before``."""
    from persample_gate import history, verdicts

    new = [path for path in history.stored(storage) if path not in before and history.header(path)[1]]
    if not new:  # asked to gate, the session measured nothing: deselected, failed, or pytest-benchmark disabled
        return pytest.ExitCode.USAGE_ERROR, "persample: nothing to gate: this run stored no timed persample point"
    earlier = [path for path in history.stored(storage, history.header(new[-1])[1]) if path in before]
    candidate = history.load(new[-1])
    previous = history.before_of(candidate.baseline, earlier)
    if previous is None:
        return None, f"no baseline yet on this hardware: {new[-1].name} is the baseline for the next run of its kind"
    try:
        verdict = verdicts.judge_stored(history.load(previous), candidate)
    except history.HistoryError as err:  # the baseline cannot be read, or was timed differently
        return pytest.ExitCode.USAGE_ERROR, f"persample: {err}"
    failed = pytest.ExitCode.TESTS_FAILED if verdict.outcome == "regression" else None
    return failed, verdicts.describe(verdict)
