"""The three rooms and the one way their imports run: core <- harness -> gate, the gate without torch."""

import subprocess
import sys

import pytest


def modules_after(statement: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after ``statement``."""
    probe = f"import sys; {statement}; print(' '.join(sorted({{name.split('.')[0] for name in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_gate_reads_and_gates_runs_without_torch():
    loaded = modules_after(
        "import persample_gate.cli, persample_gate.gate, persample_gate.history, "
        "persample_gate.plots, persample_gate.report, persample_gate.sensitivity, persample_gate.summary"
    )
    assert "torch" not in loaded and "persample_bench" not in loaded and "persample_core" not in loaded


def test_the_library_imports_neither_the_harness_nor_the_gate():
    loaded = modules_after("import persample_core")
    assert "torch" in loaded
    assert not loaded & {"persample_bench", "persample_gate", "scipy", "pytest", "matplotlib"}


@pytest.mark.parametrize("package", ["scipy", "matplotlib", "pytest_benchmark"])
def test_the_library_does_not_need_the_suites_dependencies(package):
    loaded = modules_after(
        f"sys.modules[{package!r}] = None; import persample_core as ps; "
        "ps.per_sample_grads(*ps.make_workload('mlp', batch_size=2))"
    )
    assert "persample_core" in loaded
