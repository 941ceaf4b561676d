"""The pytest-benchmark suite: one benchmark per point of the grid (``persample_bench``'s plugin
parametrizes ``persample_point`` over the sweep; ``persample_bench.bench`` times it)."""

from persample_bench.bench import time_point


def test_point(benchmark, persample_point, persample_settings):
    time_point(benchmark, persample_point, persample_settings)
