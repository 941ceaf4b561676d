"""Which hardware a run comes from, told without torch."""

from persample_bench import runformat as hardware


def test_hardware_mismatch_names_the_fields():
    a = {"cpu_model": "AMD EPYC", "gpu_name": "NVIDIA H100", "gpu_count": 1}
    b = {"cpu_model": "AMD EPYC", "gpu_name": "NVIDIA A100", "gpu_count": 1}
    assert hardware.hardware_differences(a, b) == ["gpu_name: 'NVIDIA H100' != 'NVIDIA A100'"]
    assert hardware.hardware_id(a) == "AMD_EPYC--1xNVIDIA_H100"
    assert hardware.hardware_id({"cpu_model": "AMD EPYC", "gpu_name": None}) == "AMD_EPYC--no-gpu"


def test_a_cuda_device_gets_its_cards_settings_where_nvidia_smi_names_the_same_card(monkeypatch):
    import torch

    from persample_bench import hardware as harness

    names = ["NVIDIA H200", "NVIDIA A100"]  # CUDA's order; nvidia-smi below lists the cards in another
    settings = ["1980 MHz", "3201 MHz", "1980 MHz", "3201 MHz", "700.00 W"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: names[index])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(harness, "nvidia_smi", lambda *fields: [["NVIDIA A100", *settings], ["NVIDIA H200", *settings]])
    assert harness.cuda_devices(["cpu", "cuda", "cuda:1"]) == {
        "cuda:0": {"name": "NVIDIA H200"},  # a row of another card is no row of this one
        "cuda:1": {"name": "NVIDIA A100"},
    }
    monkeypatch.setattr(harness, "nvidia_smi", lambda *fields: [["NVIDIA H200", *settings], ["NVIDIA A100", *settings]])
    found = harness.cuda_devices(["cuda:1"])
    assert found == {"cuda:1": {"name": "NVIDIA A100", **dict(zip(harness.GPU_STATE, settings))}}
    assert harness.cuda_devices(["cpu"]) == {}
