"""The pytest-benchmark suite as the project's test run collects it: every point once, untimed, under
``--benchmark-disable`` (``persample bench`` times the same test, ``persample_bench.suite``)."""

from persample_bench.suite import test_point  # noqa: F401 (collected here)
