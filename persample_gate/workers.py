"""Measuring processes of the harness, started from the gate's commands.

The gate imports no torch: what it measures, it asks of a worker,
``python -m persample_bench.worker``, with a JSON request on stdin and the
answer on stdout (see that module). A worker that refuses its request (a bad
sweep, clock or point) exits with status 2, one that cannot run the code it
was given (no torch, a persample_core without what the harness needs) with
3, either with one line on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys

REFUSED = 2  # a worker's exit status for a request it cannot measure
UNUSABLE = 3  # ... for code it cannot run: no torch in its Python, or a persample_core without what it needs


class WorkerFailed(Exception):
    """A worker refused its request or failed; the message is its last line."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.refused, self.unusable = status == REFUSED, status == UNUSABLE


def measure(request: dict, *, python: str = sys.executable, env=None, cwd=None) -> dict:
    """The worker's answer to ``request``, measured in a process of its own."""
    child = subprocess.run(
        [python, "-m", "persample_bench.worker"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    if child.returncode != 0:
        lines = child.stderr.strip().splitlines() or [f"exit status {child.returncode}, nothing on stderr"]
        raise WorkerFailed(lines[-1].removeprefix("persample worker: "), child.returncode)
    return json.loads(child.stdout)
