"""The suite and ``torch.utils.benchmark`` agree on the same code under the same heap policy (minutes: -m slow)."""

import subprocess
import sys

import pytest

from persample_bench.memory import HEAP_POLICIES
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("heap", HEAP_POLICIES)
def test_the_suite_times_the_tutorials_code_as_its_timer_does(heap):
    done = subprocess.run(
        [sys.executable, "-m", "persample_bench.crosscheck", "--heap", heap],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0 and "the two ways agree" in done.stdout, done.stdout + done.stderr[-2000:]
