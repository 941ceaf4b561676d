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
import tempfile

from persample_bench.runformat import REFUSED, UNUSABLE


class WorkerFailed(Exception):
    """A worker refused its request or failed; the message is its last line."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.refused, self.unusable = status == REFUSED, status == UNUSABLE


def _failed(stderr: str, status: int) -> WorkerFailed:
    lines = stderr.strip().splitlines() or [f"exit status {status}, nothing on stderr"]
    return WorkerFailed(lines[-1].removeprefix("persample worker: "), status)


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
        raise _failed(child.stderr, child.returncode)
    return json.loads(child.stdout)


class Worker:
    """A worker kept alive to time slices on demand (``python -m persample_bench.worker --serve``), started on
    entering and stopped, killed if need be, on leaving, however that happens (Ctrl-C included)."""

    def __init__(self, request: dict, *, python: str = sys.executable, env=None, cwd=None):
        self.request, self.python, self.env, self.cwd = request, python, env, cwd

    def __enter__(self) -> Worker:
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty worker cannot block on it
        self.process = subprocess.Popen(
            [self.python, "-m", "persample_bench.worker", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=self.env,
            cwd=self.cwd,
        )
        self.process.stdin.write(json.dumps(self.request) + "\n")
        self.process.stdin.flush()
        return self

    def answer(self) -> dict:
        """The worker's next line: after the request, the machine and points once prepared; after an ask, its
        samples."""
        line = self.process.stdout.readline()
        if not line:
            status = self.process.wait()
            self.stderr.seek(0)
            raise _failed(self.stderr.read(), status)
        return json.loads(line)

    def ask(self, point_id: str, seconds: float) -> dict:
        """``{"method": [...], "baseline": [...]}``: the point timed in interleaved rounds for ``seconds``."""
        try:
            self.process.stdin.write(json.dumps({"point": point_id, "seconds": seconds}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # it has ended: its last words say why
            pass
        return self.answer()

    def __exit__(self, kind, *exc) -> None:
        try:
            if kind is None:  # done: the end of its input ends it
                self.process.stdin.close()
                self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for stream in (self.process.stdin, self.process.stdout, self.stderr):
                try:
                    stream.close()
                except OSError:  # a pipe to a process that is gone
                    pass
