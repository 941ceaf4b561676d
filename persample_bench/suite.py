"""The pytest-benchmark suite, shipped with the harness: one benchmark per point of the grid.

The plugin (``persample_bench.plugin``) parametrizes ``persample_point`` over
the sweep; ``persample_bench.bench`` times it. Installed, it runs from any
folder: ``persample bench`` is ``pytest --pyargs persample_bench.suite
--benchmark-only --benchmark-autosave`` with persample's options named without
their prefix; the project's own ``tests/test_benchmarks.py`` collects this same
test for its plain test run.
"""

from persample_bench.bench import time_point


def test_point(benchmark, persample_point, persample_settings):
    time_point(benchmark, persample_point, persample_settings)
