"""Measuring processes of the harness, started from the gate's commands.

The gate imports no torch: what it measures, it asks of a worker,
``python -m persample_bench.worker``, with a JSON request on stdin and the
answer on stdout (see that module). A worker that refuses its request (a bad
sweep, clock or point) exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys

REFUSED = 2  # a worker's exit status for a request it cannot measure


class WorkerFailed(Exception):
    """A worker refused its request or failed; the message is its last line."""

    def __init__(self, message: str, refused: bool):
        super().__init__(message)
        self.refused = refused


def measure(request: dict, *, python: str = sys.executable, env=None) -> dict:
    """The worker's answer to ``request``, measured in a process of its own."""
    child = subprocess.run(
        [python, "-m", "persample_bench.worker"], input=json.dumps(request), capture_output=True, text=True, env=env
    )
    if child.returncode != 0:
        lines = child.stderr.strip().splitlines() or [f"exit status {child.returncode}, nothing on stderr"]
        raise WorkerFailed(lines[-1], refused=child.returncode == REFUSED)
    return json.loads(child.stdout)
