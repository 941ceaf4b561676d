"""Which hardware a run comes from, told without torch."""

from persample_bench import runformat as hardware


def test_hardware_mismatch_names_the_fields():
    a = {"cpu_model": "AMD EPYC", "gpu_name": "NVIDIA H100", "gpu_count": 1}
    b = {"cpu_model": "AMD EPYC", "gpu_name": "NVIDIA A100", "gpu_count": 1}
    assert hardware.hardware_differences(a, b) == ["gpu_name: 'NVIDIA H100' != 'NVIDIA A100'"]
    assert hardware.hardware_id(a) == "AMD_EPYC--1xNVIDIA_H100"
    assert hardware.hardware_id({"cpu_model": "AMD EPYC", "gpu_name": None}) == "AMD_EPYC--no-gpu"
