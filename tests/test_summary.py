"""Derived figures and the summary table, from the stored rounds."""

from persample_bench.runformat import Point
from persample_bench.summary import derive, interleaved_speedup, summary_table


def test_derived_figures():
    medians = {Point("mlp", m, 10, "cpu"): t for m, t in (("loop", 2.0), ("vmap", 0.5), ("floor", 0.25))}
    derived = derive(medians)
    vmap = derived[Point("mlp", "vmap", 10, "cpu")]
    assert vmap == {"time_per_sample": 0.05, "speedup_over_loop": 4.0, "floor_multiple": 2.0}
    assert derived[Point("mlp", "floor", 10, "cpu")]["speedup_over_loop"] is None
    rows = [line.split() for line in summary_table(medians).splitlines()[2:]]
    assert [next(w for w in row if w in ("loop", "vmap", "floor")) for row in rows] == ["loop", "vmap", "floor"]
    assert rows[1][-4:-2] == ["4.00x", "2.00x"]


def test_a_speedup_timed_in_rounds_with_the_loop_is_the_rounds_own():
    """The loop's own point ran at another moment: 2 s there, while in vmap's rounds the loop took 1.2-1.6 s."""
    medians = {Point("mlp", "loop", 10, "cpu"): 2.0, Point("mlp", "vmap", 10, "cpu"): 0.5}
    speedup = interleaved_speedup([0.5, 0.4, 0.5], [1.5, 1.6, 1.2])
    assert speedup == 3.0
    derived = derive(medians, interleaved={Point("mlp", "vmap", 10, "cpu"): speedup})
    assert derived[Point("mlp", "vmap", 10, "cpu")]["speedup_over_loop"] == 3.0
    assert derived[Point("mlp", "loop", 10, "cpu")]["speedup_over_loop"] == 1.0
