"""Test-only: ``-p tests.slowdown_plugin`` with PERSAMPLE_TEST_SLOWDOWN=0.2 makes vmap 20% slower.

The slowed method does proportionally more work on every call, the way a real
regression of the code would, so the gate is tested on real timings.
"""

import os

from persample_bench.timing import CLOCKS, slowed
from persample_core.methods import METHODS


def pytest_configure(config):
    fraction = float(os.environ.get("PERSAMPLE_TEST_SLOWDOWN", "0"))
    if fraction:
        real, clock = METHODS["vmap"], CLOCKS[config.getoption("persample_timer")]
        METHODS["vmap"] = lambda model, loss_fn: slowed(real(model, loss_fn), fraction, clock)
