"""The three rooms and the one way their imports run: core <- harness -> gate, the gate without torch.

The harness (``persample_bench``) owns its run format (``runformat``, with the
summary table it renders, ``summary``): the gate (``persample_gate``) imports
those two of it, which import no torch, and the harness nothing of the gate's.
Read from the code's imports (``ast``), lazy ones inside functions included, and
checked again in a fresh interpreter.
"""

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

SHARED = {"persample_bench.runformat", "persample_bench.summary"}  # what the gate may import of the harness


def _module(name: str) -> str:
    """``name`` if it is a module of the source tree or outside it, else the module it is a name in."""
    path = REPO.joinpath(*name.split("."))
    parent = name.rpartition(".")[0]
    if (
        parent
        and not (path.with_suffix(".py").exists() or path.is_dir())
        and REPO.joinpath(parent.split(".")[0]).is_dir()
    ):
        return parent
    return name


def imports(package: str) -> dict[str, set[str]]:
    """``{module: the modules it imports}`` for every module of ``package`` in the source tree, lazy imports inside
    functions included (``from a.b import c`` counts as ``a.b.c`` where ``c`` is a module, else as ``a.b``)."""
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names |= {_module(f"{node.module}.{alias.name}") for alias in node.names}
        found[module] = names
    return found


def within(names: set[str], package: str) -> set[str]:
    return {name for name in names if name == package or name.startswith(package + ".")}


def test_the_harness_imports_nothing_of_the_gate():
    harness = imports("persample_bench")
    assert len(harness) > 10 and {module: within(names, "persample_gate") for module, names in harness.items()} == {
        module: set() for module in harness
    }


def test_the_gate_imports_of_the_harness_only_its_run_format_and_summary_and_no_torch():
    gate = imports("persample_gate")
    assert len(gate) > 10
    for module, names in gate.items():
        assert within(names, "persample_bench") <= SHARED, module
        assert not within(names, "torch") and not within(names, "persample_core"), module


def test_the_run_format_and_the_summary_import_no_torch_nor_any_other_of_persample():
    harness = imports("persample_bench")
    for module in SHARED:
        assert within(harness[module], "persample_bench") <= SHARED, module
        assert not within(harness[module], "torch") and not within(harness[module], "persample_core"), module


def test_the_run_format_names_the_librarys_baseline():
    from persample_bench import runformat
    from persample_core import BASELINE

    assert runformat.BASELINE == BASELINE


def test_the_choices_named_without_torch_are_the_harness_own():
    """Named twice so that pytest's start-up and the gate import no torch; held equal here."""
    from persample_bench import grid, memory, plugin, runformat, timing

    assert set(runformat.TIMERS) == set(timing.CLOCKS)
    assert runformat.HEAPS == memory.HEAP_POLICIES
    assert set(plugin.SWEEP_CHOICES) == set(grid.SWEEPS)


def modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after ``statement``."""
    probe = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_gate_reads_and_gates_runs_without_torch():
    loaded = modules_after(
        "import persample_gate.cli, persample_gate.gate, persample_gate.history, persample_gate.plots, "
        "persample_gate.report, persample_gate.sensitivity, persample_gate.pytest_plugin, persample_gate.verdicts"
    )
    assert not within(loaded, "torch") and not within(loaded, "persample_core")
    assert within(loaded, "persample_bench") <= {"persample_bench", *SHARED}


def test_the_library_imports_neither_the_harness_nor_the_gate():
    loaded = {name.split(".")[0] for name in modules_after("import persample_core")}
    assert "torch" in loaded
    assert not loaded & {"persample_bench", "persample_gate", "scipy", "pytest", "matplotlib"}


@pytest.mark.parametrize("package", ["scipy", "matplotlib", "pytest_benchmark"])
def test_the_library_does_not_need_the_suites_dependencies(package):
    loaded = modules_after(
        f"sys.modules[{package!r}] = None; import persample_core as ps; "
        "ps.per_sample_grads(*ps.make_workload('mlp', batch_size=2))"
    )
    assert "persample_core" in loaded
