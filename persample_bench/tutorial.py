"""The tutorial's own code, timed as its reader would: ``torch.utils.benchmark.Timer`` in a plain process.

``python -m persample_bench.tutorial`` is the plain side of the cross-check
(``persample_bench.crosscheck``): it imports torch and nothing of this
project's, changes no allocator setting, and runs the code of
../shared/seed/per_sample_grads_tutorial.rst as written (its SimpleCNN, whose
forward feeds raw logits to ``nll_loss``; ``compute_sample_grads``, the loop;
``vmap(grad(compute_loss))``) at batch 64 (or the one its argument names) on
the CPU, on one torch thread
(``Timer``'s default). Each line it reads is a number of seconds; it answers
each with one JSON line, ``{"speedup": loop / vmap}``, from
``Timer.blocked_autorange`` of each callable for that long.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.utils.benchmark import Timer

BATCH = 64


class SimpleCNN(nn.Module):
    """The tutorial's model, as written."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))
        F.log_softmax(x, dim=1)  # computed and thrown away, as in the tutorial
        return x


def tutorial_pair(batch: int = BATCH) -> dict:
    """``{"baseline": loop, "method": vmap}`` as the tutorial writes them, on its data."""
    torch.manual_seed(0)
    model = SimpleCNN()
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


def main(argv=None) -> int:
    batch = int((argv or sys.argv[1:] or [BATCH])[0])  # the tutorial's 64 unless named (the tests' smaller batch)
    torch.set_num_threads(1)  # Timer's default, and the default job's
    timers = {name: Timer(stmt="fn()", globals={"fn": fn}) for name, fn in tutorial_pair(batch).items()}
    for timer in timers.values():
        timer.timeit(1)  # warm-up
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        seconds = float(line)
        medians = {name: timer.blocked_autorange(min_run_time=seconds).median for name, timer in timers.items()}
        print(json.dumps({"speedup": medians["baseline"] / medians["method"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
