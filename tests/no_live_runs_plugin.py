"""Test-only: ``-p tests.no_live_runs_plugin`` leaves out the tests that need live benchmark runs (``stored_runs``).

For quick environments, such as ``tox -e floors``: those runs take two minutes
on a 2-core CPU, and the rest of the suite already exercises what they use.
"""


def pytest_collection_modifyitems(config, items):
    live = [item for item in items if "stored_runs" in getattr(item, "fixturenames", ())]
    if live:
        config.hook.pytest_deselected(items=live)
        items[:] = [item for item in items if item not in live]
