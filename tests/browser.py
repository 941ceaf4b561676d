"""Headless Chromium (Debian's ``chromium``), for the tests that check what a page shows when a browser renders it."""

import shutil
import subprocess

import pytest

CHROMIUM = [
    "chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
    "--virtual-time-budget=15000",
]


def chromium(tmp_path, *args) -> str:
    """What Chromium prints for ``args`` (``--dump-dom URL``, ``--screenshot=PATH URL``; a later
    ``--window-size`` wins), in a fresh profile: a used one makes first-run network calls. Skips where
    chromium is not installed."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    done = subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
