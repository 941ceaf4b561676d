"""Device-aware measurement: what must be true of a timed call, and the floor.

CUDA kernels run asynchronously: a call returns when its kernels are queued,
not when they are done. A timed callable on CUDA therefore ends with
``torch.cuda.synchronize``, or the clock measures launch overhead. Anything
timed is warmed up first, so that one-time costs (lazy initialisation, cuDNN
autotuning, allocator growth, compilation) stay out of the numbers.

Two clocks (``CLOCKS``): ``wall``, the elapsed time, and ``cpu``, the
process's CPU time. On a machine shared with other jobs, or a virtual machine
whose host takes its cores away (steal time), elapsed time also counts the
spells when the process was not running; CPU time counts only the work done,
and varies far less from call to call there
(docs/studies/2026-11-28-noise-sources.md). CPU time measures a call only where the call runs on
one thread (with more, it also counts OpenMP workers spinning while they wait)
and does all its work in this process, so CUDA points always use the wall
clock (``clock_for``).
"""

from __future__ import annotations

import time

import torch

from persample_bench.precision import Precision, pilot_size, planned_rounds, relative_half_width, statistic


def asynchronous(device) -> bool:
    """Whether a call's work on ``device`` may still run after the call returns (CUDA).

    The one place a device's kind decides how it is timed: every timed call on
    such a device ends with ``synchronize``, and is timed on the wall clock
    (``clock_for``). Together with ``device_synchronize`` it is the seam the
    tests use to run the CUDA path on the CPU and watch every synchronisation
    (tests/test_cuda_path.py).
    """
    return torch.device(device).type == "cuda"


def device_synchronize(device) -> None:
    """Wait until the work queued on an ``asynchronous`` device is done."""
    torch.cuda.synchronize(device)


def synchronize(device) -> None:
    if asynchronous(device):
        device_synchronize(device)


def synchronized(fn, device):
    """``fn`` itself on the CPU; on CUDA, ``fn`` followed by a device synchronisation."""
    if not asynchronous(device):
        return fn

    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        synchronize(device)
        return out

    call.__wrapped__ = fn
    return call


def trainable_numel(model) -> int:
    """P: the number of trainable parameter entries, so B x P floats of per-sample gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def floor(model, loss_fn):
    """What no per-sample method can beat: one ordinary training step plus writing its output.

    One batched forward and backward of the same model (what a training step
    costs), then writing the B x P per-sample gradient floats that any method
    must produce. They are written into a buffer kept from the warm-up: the
    first touch of fresh pages costs more than the writing
    (docs/studies/2026-11-28-noise-sources.md), and that cost depends on the
    allocator, not on the method. A
    method's time divided by this is its multiple of the floor. Same factory
    signature as a method, so it is prepared and timed the same way.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    out = torch.empty(0)

    def compute(inputs, targets):
        nonlocal out
        grads = torch.autograd.grad(loss_fn(model(inputs), targets), params)
        flat = torch.cat([g.reshape(-1) for g in grads])
        shape = (inputs.shape[0], flat.numel())
        if out.shape != shape or out.device != flat.device or out.dtype != flat.dtype:
            out = torch.empty(shape, device=flat.device, dtype=flat.dtype)
        return out.copy_(flat.expand(shape))

    return compute


def nonprivate(model, loss_fn):
    """The step DP-SGD replaces, what a DP method's cost is a multiple of: one batched forward and backward of the
    mean loss, ``compute(inputs, targets) -> {name: gradient}``. Harness code, as the floor is: asv times each
    commit's DP methods against the same baseline."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]

    def compute(inputs, targets):
        grads = torch.autograd.grad(loss_fn(model(inputs), targets), [p for _, p in named], allow_unused=True)
        return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(named, grads)}

    return compute


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def clock_for(timer: str, device) -> str:
    """The clock a point on ``device`` is timed with when the run asks for ``timer``: the process's CPU time
    cannot see a GPU's work, so an ``asynchronous`` device always gets the wall clock."""
    return "wall" if asynchronous(device) else timer


def clock(timer: str, device):
    """``CLOCKS[clock_for(timer, device)]``: the function a point on ``device`` is timed with."""
    return CLOCKS[clock_for(timer, device)]


def check_timer(timer: str, threads: int, devices=("cpu",)) -> None:
    """Refuse the CPU clock where it would time a point on one of ``devices`` and not measure its call (see the
    module's notes); a device timed on the wall clock whatever the timer (``clock_for``) asks nothing of it."""
    if timer == "cpu" and threads != 1 and any(clock_for(timer, device) == "cpu" for device in devices):
        raise ValueError(
            f"the cpu timer needs one torch thread, not {threads}: with more it also counts "
            "workers spinning; pass --threads 1 as well (--persample-threads 1 under pytest)"
        )


def plan(fns: dict, precision: Precision, clock=time.perf_counter) -> tuple[int, dict]:
    """The pilot of a point (also its warm-up): the rounds to time after it, and what it found
    (``persample_bench.precision``). ``fns``: ``{"method": ...}``, and ``"baseline"`` where interleaved.
    One round first, whose cost sizes the pilot."""
    started = time.perf_counter()
    interleaved(fns, rounds=1, warmup=0, clock=clock)
    first = time.perf_counter() - started
    size = pilot_size(first, precision, precision.max_time - first)
    pilot = interleaved(fns, rounds=size, warmup=0, clock=clock)
    spent = time.perf_counter() - started
    rounds = planned_rounds(statistic(pilot), spent / (size + 1), precision, precision.max_time - spent)
    return rounds, {"pilot_rounds": size, "pilot_seconds": spent}


def measure(fns: dict, precision: Precision, clock=time.perf_counter) -> tuple[dict, dict]:
    """``plan``, then the planned rounds: (seconds per call, one list per name; what was reached)."""
    rounds, found = plan(fns, precision, clock)
    samples = interleaved(fns, rounds=rounds, warmup=0, clock=clock)
    return samples, {**found, **reached(samples, precision)}


def reached(samples: dict, precision: Precision) -> dict:
    """What a point's rounds reached, for its record: rounds, the precision of its median, and whether that met
    the target."""
    half_width = relative_half_width(statistic(samples))
    return {
        "rounds": len(samples["method"]),
        "precision": half_width,
        "precision_target": precision.target,
        "max_time": precision.max_time,
        "resolved": half_width <= precision.target,
    }


def interleaved(fns: dict, *, rounds: int, warmup: int = 1, clock=time.perf_counter) -> dict[str, list[float]]:
    """Time several callables in alternating rounds; seconds per call, one list per name.

    Drift of a shared machine (another job starting, the clock throttling)
    hits every callable within a round alike, so ratios taken round by round
    cancel it, where two separately timed series would not.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            fn()
            samples[name].append(clock() - start)
    return samples


def timed_for(fns: dict, seconds: float, clock=time.perf_counter) -> dict[str, list[float]]:
    """``fns`` timed in interleaved rounds for ``seconds``, one round at least: seconds per call, one list per name
    (a slice of ``persample ab``'s worker, a turn of the cross-check's suite side)."""
    samples, until = {name: [] for name in fns}, time.perf_counter() + seconds
    while not any(samples.values()) or time.perf_counter() < until:
        for name, values in interleaved(fns, rounds=1, warmup=0, clock=clock).items():
            samples[name] += values
    return samples


def slowed(fn, fraction: float, clock=time.perf_counter):
    """``fn`` doing ``fraction`` more work: after each call it spins for that share of the call's time.

    For testing the gate on real timings: a regression of the code does
    proportionally more work on every call. ``clock`` is the clock the call is
    timed with, so that the added work is the same share on it. Wrap a
    synchronised callable (a prepared point's ``run``) so that on CUDA the
    share is of the GPU's time, not the launch's.
    """

    def slow(*args):
        start = clock()
        out = fn(*args)
        until = start + (clock() - start) * (1 + fraction)
        while clock() < until:
            pass
        return out

    return slow
