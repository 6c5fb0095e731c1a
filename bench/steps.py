"""`make bench`: the cost of one SGD step at the start and at the end of a long run.

A population's data order (``MemberStreams``) must cost the same at step 10 000 as at step 1. The
case that exposed it: NameData at the paper's sizes (GRU-2, batch 1, 10 000 steps), whose tasks
hold 160 to 7 131 names, so a small task's stream has passed 60 epochs when the largest has
passed one. This bench trains one GRU-2 population over all NameData tasks (``--seeds`` per task)
and times ``--steps`` real SGD steps (forward, backward, update) at steps 0.. and at
``--at``.. (10 000 by default) in one process, and prints the ratio end / start (target <= 1.2).
Beside it: the data order alone (``positions``), now and as it was (every epoch between the
members' slowest and fastest stacked at each step), at the same two points.

Needs the names folder: ``$WEIGHTSIM_DATA/names`` or ``--data-dir`` (the shared copy works).
Run from the repository root: ``python -m bench.steps [--data-dir ../shared/data/names]``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from weightsim.data.namedata import namedata
from weightsim.nets.gru import GRUNet
from weightsim.zoo.generate import ZooConfig, builder
from weightsim.zoo.population import MemberStreams, population_module


class StackedEpochs(MemberStreams):
    """The data order as it was: at every step, every epoch from the members' lowest to their
    highest is stacked, (E, K, n_max), and indexed; E grows with the spread of the members' epochs."""

    def __init__(self, sizes: list[int], data_seeds: list[int], batch_size: int):
        super().__init__(sizes, data_seeds, batch_size)
        self.cache: dict[int, Tensor] = {}

    def epoch(self, e: int) -> Tensor:  # (K, n_max): row k is member k's permutation of epoch e
        if e not in self.cache:
            n_max = max(self.sizes)
            self.cache[e] = torch.stack([F.pad(self.permutation(k, e), (0, n_max - n))
                                         for k, n in enumerate(self.sizes)])
        return self.cache[e]

    def positions(self, step: int) -> Tensor:
        g = step * self.b + torch.arange(self.b)
        e, off = g[None] // self.n[:, None], g[None] % self.n[:, None]
        lo, hi = int(e.min()), int(e.max())
        self.cache = {k: v for k, v in self.cache.items() if k >= lo}
        perms = torch.stack([self.epoch(i) for i in range(lo, hi + 1)])  # (E, K, n_max)
        return perms[e - lo, torch.arange(len(self.sizes))[:, None], off]


def time_steps(module, first: int, n: int) -> float:
    """Mean seconds of one real SGD step (positions, forward, backward, update) at steps first.."""
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module.training_step(torch.tensor(first), 0).backward()  # warm-up (not timed)
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for step in range(first + 1, first + 1 + n):
        loss = module.training_step(torch.tensor(step), 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / n


def time_positions(streams: MemberStreams, first: int, n: int) -> float:
    streams.positions(first)  # the window (or cache) as a run arriving here would hold it
    t0 = time.perf_counter()
    for step in range(first + 1, first + 1 + n):
        streams.positions(step)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="the names folder (default $WEIGHTSIM_DATA/names)")
    ap.add_argument("--seeds", type=int, default=2, help="nets per task in the population")
    ap.add_argument("--steps", type=int, default=40, help="steps timed at each point")
    ap.add_argument("--at", type=int, default=10_000, help="the late point (the paper's run length)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    taskset = namedata(a.data_dir, train_tasks=9, unseen_tasks=0)
    sizes = [len(t.train_idx) for t in taskset.tasks]
    zc = ZooConfig(batch_size=1, lr=0.1, momentum=0.0, steps=a.at + a.steps + 1)
    build = builder(lambda **kw: GRUNet(hidden=32, layers=2, vocab_size=taskset.info["vocab_size"], **kw),
                    taskset.input_shape, taskset.classes_per_task)
    nets = [(t.id, s) for t in taskset.tasks for s in range(a.seeds)]
    module = population_module(build, taskset, nets, zc)
    print(f"GRU-2 population of {len(nets)} nets over NameData's {len(sizes)} tasks "
          f"({min(sizes)} to {max(sizes)} training names), batch 1, one thread; {a.steps} steps timed at each point")
    start, end = time_steps(module, 0, a.steps), time_steps(module, a.at, a.steps)
    print(f"SGD step:  step 0: {start * 1e3:7.2f} ms   step {a.at}: {end * 1e3:7.2f} ms   "
          f"end / start = {end / start:.2f}  (target <= 1.2)")
    streams = module.streams  # the population's own member sizes and data seeds
    for name, cls in (("now", MemberStreams), ("stacked epochs (before)", StackedEpochs)):
        s0 = time_positions(cls(streams.sizes, streams.seeds, 1), 0, a.steps)
        s1 = time_positions(cls(streams.sizes, streams.seeds, 1), a.at, a.steps)
        print(f"data order only, {name}: step 0: {s0 * 1e3:7.3f} ms   step {a.at}: {s1 * 1e3:7.3f} ms   "
              f"end / start = {s1 / s0:.1f}")


if __name__ == "__main__":
    main()
