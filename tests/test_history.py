"""Stored runs: where they are found, in what order, and by which hardware."""

import json
import shutil

from persample_bench.runformat import HistoryError, load
from persample_gate import history


def test_runs_are_found_where_pytest_benchmark_stores_them_oldest_first(recorded):
    stored = history.stored(recorded["storage"])
    assert stored == sorted(recorded["unchanged"] + [recorded["slowed"]])
    assert [load(path).time for path in stored] == sorted(load(path).time for path in stored)


def test_runs_are_picked_by_the_hardware_they_record(storage):
    other = json.loads(sorted(storage.glob("*/*.json"))[0].read_text())
    other["machine_info"]["persample"]["hardware_id"] = "Other_CPU--no-gpu"
    (storage / "Linux-CPython-3.12-64bit").mkdir()
    (storage / "Linux-CPython-3.12-64bit" / "0001_other.json").write_text(json.dumps(other))
    here = load(sorted(storage.glob("*/*.json"))[0]).machine["hardware_id"]
    assert len(history.stored(storage, here)) == 8
    assert [path.name for path in history.stored(storage, "Other_CPU--no-gpu")] == ["0001_other.json"]


def test_runs_stored_in_the_layout_before_0_2_are_still_found_in_order(recorded, tmp_path):
    """.benchmarks/<hardware id>/<machine id>/ (0.1) beside .benchmarks/<machine id>/ (0.2): one history,
    in the order the runs were made, whatever their numbers."""
    old = tmp_path / "AMD_EPYC--no-gpu" / "Linux-CPython-3.11-64bit"
    new = tmp_path / "Linux-CPython-3.11-64bit"
    old.mkdir(parents=True)
    new.mkdir()
    for number, path in enumerate(recorded["unchanged"][:3], start=1):
        shutil.copy(path, old / f"{number:04d}_old.json")
    for number, path in enumerate(recorded["unchanged"][3:5], start=1):
        shutil.copy(path, new / f"{number:04d}_new.json")
    found = history.stored(tmp_path, load(recorded["unchanged"][0]).machine["hardware_id"])
    assert [path.name for path in found] == [
        "0001_old.json",
        "0002_old.json",
        "0003_old.json",
        "0001_new.json",
        "0002_new.json",
    ]


def test_a_saved_id_names_one_run(recorded):
    assert history.resolve("0003", recorded["storage"]) == recorded["unchanged"][2]


def test_an_ambiguous_saved_id_lists_the_runs(recorded, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(recorded["unchanged"][0], tmp_path / folder / "0001_run.json")
    try:
        history.resolve("0001", tmp_path)
    except HistoryError as err:
        assert "saved run id '0001' is ambiguous" in str(err) and "pass a path instead" in str(err)
    else:
        raise AssertionError("an ambiguous id was resolved")


def test_nothing_is_written_while_reading(recorded):
    before = {path: path.stat().st_mtime_ns for path in recorded["storage"].rglob("*")}
    history.stored(recorded["storage"], "AMD_EPYC--no-gpu")
    history.latest_two(recorded["storage"])
    assert before == {path: path.stat().st_mtime_ns for path in recorded["storage"].rglob("*")}
