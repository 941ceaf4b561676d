"""``persample compare`` on recorded runs: verdicts, exit codes, and one-line refusals."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from persample_bench.runformat import hardware_id, this_machine
from persample_gate import cli
from tests.conftest import persample


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.startswith(("mlp-", "simple_cnn-", "vmap-", "loop-"))]


def test_a_real_injected_slowdown_is_flagged_and_listed_first(recorded):
    """vmap doing twice the work: its speedup over both points (the pooled row) regresses and leads the table."""
    code, out = persample("compare", recorded["unchanged"][-1], recorded["slowed"])
    assert code == cli.REGRESSION, out
    assert "from the 7 runs stored up to the baseline" in out, out
    table = rows(out)
    assert table[0][:5] == ["vmap-cpu", "(weighted", "geomean", "of", "2)"] and table[0][5] == "speedup", out
    assert table[0][-1] == "REGRESSION", out
    verdicts = [row[-1] for row in table]
    assert verdicts == sorted(verdicts, key=lambda verdict: verdict != "REGRESSION"), "regressions come first"
    assert "vmap-cpu (weighted geomean of 2), speedup: weighs most" in out, out
    assert "regression: p over all 12 rows < 0.01" in out and "pooled speedup rows share 75% of 0.01" in out, out


def test_an_unchanged_rerun_passes(recorded):
    code, out = persample("compare", *recorded["unchanged"][-2:])
    assert code == cli.OK, out
    assert "0 regression(s) in 6 common point(s)" in out


def test_a_run_against_a_copy_of_itself_passes(recorded, storage):
    newest = sorted(storage.glob("*/*.json"))[-2]
    copy = newest.with_name("0099_copy.json")
    copy.write_bytes(newest.read_bytes())
    code, out = persample("compare", newest, copy)
    assert code == cli.OK and "+0.0%" in out, out


def test_with_too_little_history_there_is_no_verdict_yet(recorded):
    """Two runs stored before the candidate: the noise between runs is not known, and the exit status says so."""
    code, out = persample("--storage", recorded["storage"], "compare", "0002", "0003")
    assert code == cli.NO_VERDICT, out
    assert "no verdict yet: the noise between runs on this hardware is learnt from 5 comparable runs" in out, out
    assert "and 2 are; store 3 more" in out and "persample ab" in out, out


def test_the_newest_two_runs_of_this_hardware_by_default(storage):
    """No run named: the newest run of this machine's hardware against the one before it."""
    for path in storage.glob("*/*.json"):  # recorded elsewhere, perhaps: make them this machine's
        data = json.loads(path.read_text())
        data["machine_info"]["persample"].update(this_machine(), hardware_id=hardware_id(this_machine()))
        path.write_text(json.dumps(data))
    code, out = persample("--storage", storage, "compare")
    newest = sorted(storage.glob("*/*.json"))
    assert code == cli.REGRESSION and f"baseline  {newest[-2]}" in out and f"candidate {newest[-1]}" in out, out


def test_no_run_stored_yet_is_no_verdict(tmp_path):
    code, out = persample("--storage", tmp_path, "compare")
    assert code == cli.NO_VERDICT and "no baseline yet: 0 stored run(s)" in out, out


def test_a_corrupt_file_is_named_in_one_line_and_left_alone(recorded, tmp_path):
    corrupt = tmp_path / "0009_truncated.json"
    corrupt.write_text(recorded["slowed"].read_text()[:500])
    before = corrupt.read_bytes()
    code, out = persample("compare", recorded["unchanged"][0], corrupt)
    assert code == cli.BAD_INPUT
    assert f"{corrupt}: truncated or corrupt JSON" in out and "\n" not in out.strip()
    assert corrupt.read_bytes() == before


def test_a_run_without_raw_rounds_is_refused(recorded, tmp_path):
    stripped = json.loads(recorded["slowed"].read_text())
    del stripped["benchmarks"][0]["stats"]["data"]
    path = tmp_path / "stripped.json"
    path.write_text(json.dumps(stripped))
    code, out = persample("compare", recorded["unchanged"][0], path)
    assert code == cli.BAD_INPUT and "not a persample run with raw rounds (missing 'data')" in out


@pytest.mark.parametrize(
    "changed, code, message",
    [
        (
            {"gpu_name": "NVIDIA H100 80GB HBM3", "gpu_count": 1},
            cli.OTHER_HARDWARE,
            "come from different hardware (gpu_name: None != 'NVIDIA H100 80GB HBM3'; gpu_count: 0 != 1)",
        ),
        (
            {"torch_threads": 2, "timer": "wall"},
            cli.BAD_INPUT,
            "were timed differently (torch_threads: 1 != 2; timer: 'cpu' != 'wall')",
        ),
        ({"heap_policy": "system"}, cli.BAD_INPUT, "were timed differently (heap_policy: 'kept' != 'system')"),
        (
            {"float32_matmul_precision": "medium"},
            cli.BAD_INPUT,
            "computed with different numerics (float32_matmul_precision: 'highest' != 'medium')",
        ),
        (
            {"tf32_cudnn": False, "cudnn_benchmark": True},
            cli.BAD_INPUT,
            "(tf32_cudnn: True != False; cudnn_benchmark: False != True)",
        ),
    ],
    ids=["hardware", "threads-and-clock", "heap", "matmul-precision", "cudnn"],
)
def test_runs_that_cannot_be_compared_are_refused_naming_the_fields(recorded, tmp_path, changed, code, message):
    other = json.loads(recorded["unchanged"][1].read_text())
    other["machine_info"]["persample"].update(changed)
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    returned, out = persample("compare", recorded["unchanged"][0], path)
    assert returned == code and message in out, out


def test_runs_of_other_torch_builds_are_compared_saying_so_in_one_line(recorded, tmp_path):
    other = json.loads(recorded["unchanged"][1].read_text())
    other["machine_info"]["persample"]["torch_version"] = "2.12.0+cpu"
    path = tmp_path / "older.json"
    path.write_text(json.dumps(other))
    code, out = persample("compare", path, recorded["unchanged"][0])
    assert code == cli.NO_VERDICT and "software  torch 2.12.0+cpu -> 2.13.0+cpu: the change includes torch's" in out
    code, out = persample("compare", recorded["unchanged"][1], recorded["unchanged"][0])
    assert "software" not in out


def test_the_noise_between_runs_comes_from_the_runs_stored_up_to_the_baseline(recorded, tmp_path):
    """Beside the baseline, up to it and with it: four runs are too few, five make the noise known; one
    unreadable among them is named, left out and left alone."""
    folder = tmp_path / "Linux-CPython"
    folder.mkdir()
    for path in recorded["unchanged"][:5]:
        (folder / path.name).write_bytes(path.read_bytes())
    *earlier, baseline, candidate = sorted(folder.glob("*.json"))
    code, out = persample("compare", baseline, candidate)
    assert code == cli.NO_VERDICT and "and 4 are" in out, out
    early = json.loads(recorded["unchanged"][6].read_text())
    early["datetime"] = "2026-01-01T00:00:00+00:00"  # stored before the others
    (folder / "0000_early.json").write_text(json.dumps(early))
    code, out = persample("compare", baseline, candidate)
    assert "from the 5 runs stored up to the baseline" in out and "run to run" in out and "±" in out, out
    earlier[1].write_text("{")
    code, out = persample("compare", baseline, candidate)
    assert "and 4 are" in out and f"left out of the noise estimate, unreadable: {earlier[1]}" in out, out
    assert earlier[1].read_text() == "{"


def test_an_unknown_saved_id_is_named(tmp_path):
    code, out = persample("--storage", tmp_path, "compare", "0042", "0043")
    assert code == cli.BAD_INPUT and "no saved run '0042'" in out


@pytest.mark.parametrize("value", ["0", "-5%", "ten"])
def test_a_threshold_that_is_not_a_fraction_is_refused(recorded, value):
    code, out = persample("compare", *recorded["unchanged"][:2], f"--threshold-ratio={value}")
    assert code == 2 and "is not a threshold; give a fraction such as 0.1 or 10%" in out, out


@pytest.mark.parametrize("where", ["before", "after"])
def test_storage_is_accepted_before_or_after_the_command(recorded, capsys, where):
    storage = ["--storage", str(recorded["storage"])]
    code = cli.main([*storage, "runs"] if where == "before" else ["runs", *storage])
    listed = capsys.readouterr().out
    assert code == cli.OK and all(path.name in listed for path in recorded["unchanged"]), listed


def test_the_console_script_runs_the_command(recorded):
    """The other tests call ``cli.main`` in-process; this one runs ``persample`` as a user does."""
    script = shutil.which("persample", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert script, "no persample console script beside this Python: pip install -e ."
    done = subprocess.run([script, "runs", "--storage", str(recorded["storage"])], capture_output=True, text=True)
    assert done.returncode == 0 and recorded["unchanged"][0].name in done.stdout, done.stdout + done.stderr


def test_persample_bench_gives_persample_options_their_prefix_and_passes_the_rest():
    given = ["--workload", "m:f", "--batch-sizes=4,16", "-k", "vmap", "--benchmark-json", "x.json", "--gate"]
    assert cli.bench_arguments(given) == [
        "--persample-workload", "m:f", "--persample-batch-sizes=4,16", "-k", "vmap", "--benchmark-json", "x.json",
        "--persample-gate",
    ]  # fmt: skip
    code, out = persample("bench", "--help")
    assert code == cli.OK and "--workload SPEC" in out and "--benchmark-autosave" in out, out
