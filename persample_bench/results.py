"""What a session's points leave: the run's machine info and derived figures in the stored JSON, and the summary.

A hook plugin the suite's plugin registers for every session. Its
pytest-benchmark hooks are optional (an environment with the library alone has
no pytest-benchmark), and each acts on the suite's own points only: another
project's benchmarks in the same session are stored as pytest-benchmark would
store them. The format written is ``persample_bench.runformat``'s.
"""

from __future__ import annotations

import pytest

from persample_bench.settings import Settings

SETTINGS = pytest.StashKey[Settings]()


def _tutorial_line(tutorial: dict, interleaved: dict, heap: str) -> str:
    """The tutorial's point as a user of its code gets it, beside this run's figure."""
    from persample_bench.crosscheck import POINT

    if "error" in tutorial:
        return "\n" + tutorial["error"]
    turns = tutorial["turns"]
    return (
        f"\nthe tutorial's point, {POINT.workload} B={POINT.batch_size}: {tutorial['speedup']:.2f}x as its own code "
        f"gives it ({tutorial['how']}; {len(turns)} turns, {min(turns):.2f}-{max(turns):.2f}x); "
        f"{interleaved[POINT]:.2f}x in this run (heap {heap}: docs/measuring.md)"
    )


def _read(timed) -> tuple[dict, dict]:
    """``summary.of_rounds`` of ``(point, rounds, extra_info)``: the medians and the interleaved speedups."""
    from persample_bench.summary import of_rounds

    timed = list(timed)
    return of_rounds(
        {point: list(rounds) for point, rounds, _ in timed},
        {point: info["baseline_rounds"] for point, _, info in timed if "baseline_rounds" in info},
    )


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    settings = config.stash[SETTINGS]
    if settings.records or settings.heap_said is not None:
        machine_info["persample"] = settings.machine_info()


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark):
    """``--benchmark-compare`` against a persample run of other hardware is refused, naming what differs."""
    theirs = compared_benchmark.get("machine_info", {}).get("persample")
    if theirs is None:
        return
    from persample_bench.runformat import hardware_differences

    differences = hardware_differences(config.stash[SETTINGS].machine_info(), theirs)
    if differences:
        raise pytest.UsageError(
            f"--benchmark-compare: that run comes from other hardware ({'; '.join(differences)}); name a run of "
            "this machine (persample runs lists them with their hardware)"
        )


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Each point's raw rounds and derived figures (time per sample, speedup, multiple of the floor; in a run of the
    DP step, time and peak memory as multiples of the non-private step's) in the stored run. The gate tests on the
    rounds, so the suite's points carry them whatever ``--benchmark-save-data`` says."""
    from persample_bench.runformat import NONPRIVATE, POINT_FIELDS, Point
    from persample_bench.summary import derive, memory_multiples

    machine = output_json["machine_info"].get("persample")
    ours = [bench for bench in output_json["benchmarks"] if set(POINT_FIELDS) <= bench["extra_info"].keys()]
    if machine is None or not ours:
        return
    rounds = {bench.fullname: bench.stats.data for bench in benchmarks}
    for bench in ours:
        bench["stats"].setdefault("data", list(rounds[bench["fullname"]]))
    by_point = {Point.of(bench["extra_info"]): bench for bench in ours}
    medians, interleaved = _read(
        (point, bench["stats"]["data"], bench["extra_info"]) for point, bench in by_point.items()
    )
    derived = derive(medians, baseline=machine["baseline"], floor_name=machine["floor"], interleaved=interleaved)
    for point, figures in derived.items():
        by_point[point]["extra_info"].update(figures)
    if machine["baseline"] == NONPRIVATE:
        peaks = {point: bench["extra_info"].get("peak_memory_bytes") for point, bench in by_point.items()}
        for point, multiple in memory_multiples(peaks, NONPRIVATE).items():
            by_point[point]["extra_info"]["memory_vs_nonprivate"] = multiple
    if tutorial := config.stash[SETTINGS].tutorial():  # a figure of this run, not of the machine: beside its info
        output_json["persample"] = {"tutorial": tutorial}


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    settings = config.stash[SETTINGS]
    if not settings.records:
        return
    from persample_bench.summary import summary_table

    machine, records = settings.machine_info(), settings.records
    medians, interleaved = _read((point, bench.stats.stats.data, bench.extra_info) for point, bench in records.items())
    memory = {p: (b.extra_info.get("peak_memory_bytes"), b.extra_info["gradient_bytes"]) for p, b in records.items()}
    gated, plain = settings.precision(gated=True), settings.precision(gated=False)
    swept = (
        f"{', '.join(settings.workloads)} ({settings.sweep} sweep's methods)"
        if settings.workloads
        else (f"{settings.sweep} sweep")
    )
    terminalreporter.section(
        f"persample summary: {swept}, {machine['torch_threads']} torch thread(s), {settings.timer} "
        f"clock{' (CUDA points: wall)' if settings.timer != 'wall' and machine.get('cuda_devices') else ''}, "
        f"heap {settings.heap}"
    )
    terminalreporter.write_line(
        f"each point timed until its median is known within +-{gated.target:.0%} (speedup points) / "
        f"+-{plain.target:.0%} (others), or for {gated.max_time:g} s / {plain.max_time:g} s; "
        f"{machine['hardware_id']}, torch {machine['torch_version']}"
    )
    terminalreporter.write_line(
        summary_table(
            medians, memory, baseline=machine["baseline"], floor_name=machine["floor"], interleaved=interleaved
        )
    )
    if tutorial := settings.tutorial():
        terminalreporter.write_line(_tutorial_line(tutorial, interleaved, settings.heap))
    short = [point.id for point, bench in sorted(records.items()) if not bench.extra_info["resolved"]]
    if short:
        terminalreporter.write_line(
            f"\nshort of the precision ({len(short)}): {', '.join(short)}; their medians are rougher (a larger "
            "--persample-max-time gives them more rounds)"
        )
    compiled = {p: b.extra_info["compile_seconds"] for p, b in records.items() if b.extra_info.get("compile_seconds")}
    if compiled:
        terminalreporter.write_line(
            "\ncompile time, spent in warm-up and kept out of the medians: "
            + ", ".join(f"{point.id} {seconds:.1f} s" for point, seconds in sorted(compiled.items()))
        )
