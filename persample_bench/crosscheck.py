"""Does the suite time what ``torch.utils.benchmark`` times? The tutorial's code and the suite's, both ways.

``python -m persample_bench.crosscheck [--heap kept|system]``: in one process
(one heap policy, one torch thread, as ``Timer`` defaults to), two pairs of
callables at batch 64 on the CPU:

- the tutorial's own code, as it is written: its SimpleCNN (whose forward
  feeds raw logits to ``nll_loss``), ``compute_sample_grads`` (the loop) and
  ``vmap(grad(compute_loss))``;
- the suite's: ``persample_core``'s ``loop`` and ``vmap`` on its
  ``simple_cnn`` workload (log-softmax before ``nll_loss``, the tutorial's
  slip fixed).

Each pair's speedup is measured two ways, on the wall clock both times:
``Timer.blocked_autorange``, a block of the loop then one of vmap, the
tutorial's way, and the suite's interleaved rounds (``timing.measure``). The
two ways take turns, a Timer turn then a suite turn of the same seconds, so
that both see the same stretches of a machine whose speed wanders over
seconds (docs/studies/2026-12-03-ab.md); each way's speedup is the median of
its turns'. The two ways must agree
on the same code within ``--tolerance`` (exit status 1 where they do not);
where the pairs differ, the code differs, not the timing. A slow test runs it
under both heap policies (tests/test_crosscheck.py); docs/measuring.md gives
the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.utils.benchmark import Timer

from persample_bench.memory import HEAP_POLICIES, apply_heap_policy
from persample_bench.precision import Precision, statistic
from persample_bench.timing import measure
from persample_core import make_workload, prepare
from persample_core.workloads import SimpleCNN

BATCH = 64


class TutorialCNN(SimpleCNN):
    """The tutorial's SimpleCNN as written: its ``log_softmax`` is computed and thrown away."""

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))
        F.log_softmax(x, dim=1)
        return x


def tutorial_pair(batch: int = BATCH) -> dict:
    """``{"baseline": loop, "method": vmap}`` as the tutorial writes them, on its data."""
    torch.manual_seed(0)
    model = TutorialCNN()
    data, targets = torch.randn(batch, 1, 28, 28), torch.randint(10, (batch,))

    def compute_grad(sample, target):
        loss = F.nll_loss(model(sample.unsqueeze(0)), target.unsqueeze(0))
        return torch.autograd.grad(loss, list(model.parameters()))

    def compute_sample_grads():
        sample_grads = [compute_grad(data[i], targets[i]) for i in range(batch)]
        return [torch.stack(shards) for shards in zip(*sample_grads)]

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def compute_loss(params, buffers, sample, target):
        predictions = functional_call(model, (params, buffers), (sample.unsqueeze(0),))
        return F.nll_loss(predictions, target.unsqueeze(0))

    ft_compute_sample_grad = vmap(grad(compute_loss), in_dims=(None, None, 0, 0))
    return {"method": lambda: ft_compute_sample_grad(params, buffers, data, targets), "baseline": compute_sample_grads}


def suite_pair(batch: int = BATCH) -> dict:
    """``{"baseline": loop, "method": vmap}`` as the suite times them: ``persample_core`` on ``simple_cnn``."""
    model, loss_fn, inputs, targets = make_workload("simple_cnn", batch_size=batch)
    loop, vmapped = (prepare(model, loss_fn, method=name) for name in ("loop", "vmap"))
    return {"method": lambda: vmapped(inputs, targets), "baseline": lambda: loop(inputs, targets)}


def both_ways(pair: dict, turns: int, seconds: float) -> tuple[float, float]:
    """The speedup by ``Timer.blocked_autorange`` (a block of each callable, ``seconds`` each) and by the suite's
    interleaved rounds (``2 * seconds`` at most), in alternating turns: the median of each way's turns."""
    timers = {name: Timer(stmt="fn()", globals={"fn": fn}) for name, fn in pair.items()}
    by_timer, by_suite = [], []
    for _ in range(turns):
        medians = {name: timer.blocked_autorange(min_run_time=seconds).median for name, timer in timers.items()}
        by_timer.append(medians["baseline"] / medians["method"])
        samples, _ = measure(pair, Precision(0.01, max_time=2 * seconds), clock=time.perf_counter)
        by_suite.append(1 / statistics.median(statistic(samples)))
    return statistics.median(by_timer), statistics.median(by_suite)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persample_bench.crosscheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--heap", choices=HEAP_POLICIES, default="kept", help="heap policy (default: kept)")
    parser.add_argument("--turns", type=int, default=6, help="turns of each way (default: 6)")
    parser.add_argument("--seconds", type=float, default=1.0, help="min_run_time of a Timer block (default: 1)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="the two ways may differ by (default: 0.10)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # Timer's default
    said = apply_heap_policy(args.heap)
    print(f"heap {args.heap} ({said}); 1 torch thread; batch {BATCH}; CPU; wall clock")
    print(f"{'code':10s}  {'Timer.blocked_autorange':>24s}  {'suite (interleaved)':>20s}  {'difference':>10s}")
    agree = True
    for name, pair in (("tutorial", tutorial_pair()), ("suite", suite_pair())):
        for fn in pair.values():
            fn()  # warm-up
        timer, suite = both_ways(pair, args.turns, args.seconds)
        difference = suite / timer - 1
        agree &= abs(difference) <= args.tolerance
        print(f"{name:10s}  {timer:23.2f}x  {suite:19.2f}x  {difference:+10.1%}", flush=True)
    print("the two ways agree" if agree else f"the two ways differ by more than {args.tolerance:.0%}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
