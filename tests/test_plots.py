"""Figures are made from real stored runs."""

import pytest

from persample_gate import history, plots
from tests.conftest import persample

pytest.importorskip("matplotlib", reason="plots need matplotlib (the test extra installs it)")


def test_plot_command_writes_png_and_svg_of_the_newest_run_and_the_history(recorded, tmp_path):
    runs = [*recorded["unchanged"][:2], recorded["slowed"]]
    code, out = persample("plot", *runs, "--out", tmp_path)
    assert code == 0, out
    for name in ("time_per_sample", "speedup", "memory", "history"):
        for ext in ("png", "svg"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 5000, f"{name}.{ext} is empty"


def test_figures_hold_the_runs_numbers(recorded, tmp_path):
    runs = [history.load(path) for path in (*recorded["unchanged"][:2], recorded["slowed"])]
    figures = plots.figures_of(runs[-1])
    vmap = next(f for p, f in figures.items() if p.method == "vmap")
    assert vmap["speedup_over_loop"] > 0 and vmap["peak_memory_bytes"] > 0 and vmap["gradient_bytes"] > 0
    figure = plots.history_figure(runs, tmp_path)
    assert [p.suffix for p in figure] == [".png", ".svg"]


def test_plot_without_stored_runs_says_how_to_make_one(tmp_path):
    code, out = persample("--storage", tmp_path, "plot", "--out", tmp_path / "plots")
    assert code == 3 and "no stored runs of this hardware" in out and "tox -e bench" in out


def test_two_dtypes_of_a_workload_draw_two_lines():
    from persample_bench.runformat import Point
    from persample_gate.plots import _series

    figures = {Point("mlp", "vmap", 8, "cpu", dtype): {"speedup_over_loop": speedup} for dtype, speedup in
               (("float32", 2.0), ("bfloat16", 3.0))}  # fmt: skip
    series = _series(figures, "speedup_over_loop")
    assert series[("mlp", "cpu")]["vmap"] == [(8, 2.0)] and series[("mlp", "cpu-bfloat16")]["vmap"] == [(8, 3.0)]
