"""The sweep, defined once for both suites."""

import pytest
import torch

from persample_bench.grid import axes, check_device, check_dtypes, check_methods, current_sweep, in_sweep, points, sizes
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
    with pytest.raises(ValueError, match=r"unknown sweep \(PERSAMPLE_SWEEP\) 'huge'; choose one of: dp, full, mission"):
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


def test_the_dp_standard_workloads_are_in_the_quick_and_full_sweeps_only():
    for sweep, batches in (("quick", {1, 8}), ("full", {1, 8, 32, 64, 128})):
        assert {p.batch_size for p in points(sweep, devices=("cpu",)) if p.workload == "resnet18_gn"} == batches
        assert any(p.workload == "char_lstm" for p in points(sweep, devices=("cpu",)))
    assert not {"resnet18_gn", "char_lstm"} & {p.workload for p in points("mission")}


def test_named_workloads_are_timed_alone_at_the_sweeps_their_own_or_the_given_batch_sizes():
    assert sizes("mission", workloads=["mlp", "resnet18_gn"]) == {"mlp": (1, 64), "resnet18_gn": (1, 8, 32)}
    assert sizes("quick", workloads=["resnet18_gn"]) == {"resnet18_gn": (1, 8)}
    assert sizes("mission", workloads=["mlp"], batch_sizes=(4, 16)) == {"mlp": (4, 16)}
    assert {p.workload for p in points("mission", workloads=["mlp"])} == {"mlp"}


def test_asv_names_its_workloads_in_the_environment(monkeypatch):
    monkeypatch.setenv("PERSAMPLE_WORKLOADS", "char_lstm, mlp")
    assert axes("mission")["workload"] == ["char_lstm", "mlp"] and in_sweep(Point("char_lstm", "vmap", 8, "cpu"))


def test_registered_workloads_join_the_quick_sweep_at_their_own_batch_sizes(monkeypatch):
    from persample_core import workloads

    monkeypatch.setattr(workloads, "registered", lambda: {"theirs": None})
    monkeypatch.setattr(workloads, "batch_sizes", lambda name: (2, 4))
    assert sizes("quick")["theirs"] == (2, 4) and "theirs" not in sizes("mission")


def test_the_dtype_axis_names_its_points_and_times_float16_on_cuda_only():
    chosen = points("mission", devices=("cpu", "cuda"), workloads=["mlp"], dtypes=check_dtypes(["bfloat16", "float16"]))
    assert {(p.device, p.dtype) for p in chosen} == {("cpu", "bfloat16"), ("cuda", "bfloat16"), ("cuda", "float16")}
    assert Point("mlp", "vmap", 64, "cpu", "bfloat16").id == "mlp-vmap-B64-cpu-bfloat16"
    assert Point("mlp", "vmap", 64, "cpu").id == "mlp-vmap-B64-cpu" and check_dtypes([]) == ["float32"]
    with pytest.raises(ValueError, match="unknown dtype 'half'; choose one of: bfloat16, float16, float32"):
        check_dtypes(["half"])


def test_a_point_stored_before_the_dtype_axis_is_float32():
    info = {"workload": "mlp", "method": "vmap", "batch_size": 64, "device": "cpu"}
    assert Point.of(info) == Point("mlp", "vmap", 64, "cpu", "float32") == Point.of({**info, "dtype": "float32"})
