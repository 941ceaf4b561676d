"""``persample sensitivity``: how often the gate cries wolf and how small a slowdown it catches."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from persample_bench.runformat import Point, Run
from persample_gate import cli, gate
from persample_gate.sensitivity import flagged, format_study, scaled
from tests.conftest import persample
from tests.test_gate import POINT, _run


def test_counts_flagged_pairs_across_trials():
    runs = {
        0.0: [_run(f"r{s}", 0.0, POINT, s, 0.03) for s in range(4)],
        0.2: [_run(f"s{s}", np.log(1.2), POINT, s + 10, 0.03) for s in range(4)],
    }
    # unchanged: each pair of trials once; slowed: every other trial's run (4 x 3), never a trial against itself.
    # Four runs make a history of two: the gate calls only gross slowdowns, and 20% is not one.
    result = flagged(runs, [0.1])[0.1]
    assert result[0.0] == {POINT.id: (0, 6), "all points": (0, 6), "runs (any row)": (0, 6)}
    assert result[0.2] == {POINT.id: (0, 12), "all points": (0, 12), "runs (any row)": (0, 12)}
    gross = flagged({**runs, 2.0: [_run(f"g{s}", np.log(3.0), POINT, s + 20, 0.03) for s in range(4)]}, [0.1])[0.1]
    assert gross[2.0][POINT.id] == (12, 12)
    table = format_study(gross, 0.1)
    assert "none (false alarm)" in table and "20% slower" in table and "100.0% (12/12)" in table


def test_scaled_slows_the_method_and_leaves_the_loop_alone():
    loop, floor = Point("mlp", "loop", 64, "cpu"), Point("mlp", "floor", 64, "cpu")
    run = Run(Path("r"), {}, "", {POINT: [1.0, 2.0], loop: [4.0, 4.0], floor: [0.5]}, {POINT: [4.0, 4.0]})
    slow = scaled(run, "vmap", 0.1)
    assert np.allclose(gate.ratio_samples(slow, POINT), [1.1 / 4, 2.2 / 4])
    assert slow.samples[loop] == [4.0, 4.0] and slow.baseline_rounds == run.baseline_rounds
    assert slow.samples[floor] == [0.5]  # other methods' rows stay: they share the gate's alpha
    assert run.samples[POINT] == [1.0, 2.0]  # the stored run itself is left as it was


def _cells(out, section, row):
    """(flagged, pairs) per column of ``row`` in the tables after ``section``."""
    table = out.split(section)[1]
    line = next(line for line in table.splitlines() if line.startswith(row))
    return [(int(done), int(total)) for done, total in re.findall(r"\((\d+)/(\d+)\)", line)]


def test_stored_runs_are_gated_against_each_other(recorded):
    """The recorded unchanged runs, vmap's rounds scaled by each slowdown: every pair once for false alarms,
    every run against every other one's slowed copy for detection, each with the other five as its history."""
    runs = len(recorded["unchanged"])
    code, out = persample("sensitivity", "--stored", *recorded["unchanged"], "--thresholds", "0.1")
    assert code == cli.OK, out
    assert f"{runs} stored runs" in out and "vmap's points slowed by scaling its rounds" in out, out
    cells = _cells(out, "the gate knowing the noise between runs", "vmap-cpu (weighted geomean of 2)")
    assert [total for _, total in cells] == [runs * (runs - 1) // 2] + [runs * (runs - 1)] * 4
    assert cells[0][0] == 0 and cells[-1][0] > cells[0][0], out  # 20% slower is caught in some pairs, none falsely
    any_row = _cells(out, "the gate knowing the noise between runs", "runs (any row)")
    assert [total for _, total in any_row] == [total for _, total in cells]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "opacus"], "has no point of opacus; name a method it has with --method"),
        (["--save", "study.json"], "--save keeps measured trials; --stored measures nothing"),
    ],
)
def test_stored_runs_refuse_what_they_cannot_study(recorded, args, message):
    code, out = persample("sensitivity", "--stored", *recorded["unchanged"], *args)
    assert code == cli.BAD_INPUT and message in out, out


def test_stored_runs_need_the_loop_for_a_speedup(recorded, tmp_path):
    """Runs of vmap alone, timed on its own: no loop to take a speedup over, and the study says so."""
    paths = []
    for number, path in enumerate(recorded["unchanged"][:3]):
        data = json.loads(path.read_text())
        data["benchmarks"] = [bench for bench in data["benchmarks"] if bench["extra_info"]["method"] == "vmap"]
        for bench in data["benchmarks"]:
            del bench["extra_info"]["baseline_rounds"]
        paths.append(tmp_path / f"{number:04d}_vmap.json")
        paths[-1].write_text(json.dumps(data))
    code, out = persample("sensitivity", "--stored", *paths)
    assert code == cli.BAD_INPUT and "has no speedup of vmap: the loop's points are missing" in out, out


def test_stored_runs_need_three(recorded, tmp_path):
    code, out = persample("--storage", tmp_path, "sensitivity", "--stored", *recorded["unchanged"][:2])
    assert code == cli.BAD_INPUT and "--stored needs at least 3 runs, given: 2" in out, out
    code, out = persample("--storage", tmp_path, "sensitivity", "--stored")
    assert code == cli.BAD_INPUT and f"stored on this hardware under {tmp_path}: 0" in out, out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trials", "2"], "--trials must be at least 3"),
        (["--timer", "cpu", "--threads", "2"], "needs one torch thread, not 2"),
        (["--sweep", "huge"], "unknown sweep 'huge'; choose one of: dp, full, mission, quick"),
    ],
)
def test_what_cannot_be_measured_is_refused(args, message):
    code, out = persample("sensitivity", *args)
    assert code == cli.BAD_INPUT and message in out, out
