"""The sweep, defined once for both suites."""

import pytest
import torch

from persample_bench.grid import axes, check_device, check_methods, current_sweep, in_sweep, points
from persample_bench.runformat import Point


def test_grid_is_one_definition_for_both_suites():
    every = points("quick")
    assert {p.batch_size for p in every if p.workload == "simple_cnn"} == {1, 8, 32, 64, 128, 256}
    params = axes("quick")
    assert all(in_sweep(p, "quick") for p in every)
    assert not in_sweep(Point("mlp", "vmap", 8, "cpu"), "quick")  # 8 is only on the default workload
    assert set(params["method"]) >= {"loop", "vmap"} and params["device"] == ["cpu", "cuda"]


def test_the_default_sweep_is_the_missions_pair_with_the_floor():
    mission = points("mission", floor="floor", devices=("cpu",))
    assert {p.method for p in mission} == {"loop", "vmap", "floor"}
    assert sorted({p.batch_size for p in mission if p.workload == "simple_cnn"}) == [1, 8, 32, 64, 128]
    assert {(p.workload, p.batch_size) for p in mission if p.workload != "simple_cnn"} == {
        ("mlp", 1),
        ("mlp", 64),
        ("tiny_transformer", 1),
        ("tiny_transformer", 64),
    }
    assert not in_sweep(Point("simple_cnn", "opacus", 8, "cpu"), "mission") and in_sweep(
        Point("simple_cnn", "opacus", 8, "cpu"), "quick"
    )


def test_methods_are_checked_and_keep_the_loop():
    assert check_methods(["vmap_chunked"]) == ["loop", "vmap_chunked"]
    with pytest.raises(ValueError, match="unknown method 'vamp'; choose one of: "):
        check_methods(["vamp"])


def test_an_unknown_sweep_in_the_environment_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("PERSAMPLE_SWEEP", "huge")
    with pytest.raises(ValueError, match=r"unknown sweep \(PERSAMPLE_SWEEP\) 'huge'; choose one of: full, mission"):
        current_sweep()


def test_a_device_is_checked_against_what_this_machine_shows(monkeypatch):
    assert check_device("cpu") == "cpu"
    for text in ("gpu", "cpu:1", "cuda:x"):
        with pytest.raises(ValueError, match=f"'{text}' is not a device to time on; choose cpu, cuda or cuda:N"):
            check_device(text)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda:1: CUDA is not available here"):
        check_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1" and in_sweep(Point("mlp", "vmap", 64, "cuda:1"), "mission")
    with pytest.raises(ValueError, match=r"cuda:2: this machine shows 2 CUDA device\(s\), cuda:0 to cuda:1"):
        check_device("cuda:2")
