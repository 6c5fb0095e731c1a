"""What a population holds on its device, planned before it trains (docs/zoo.md, *Memory*).

A population of K members holds, on the device it trains on:

- the dataset's pool x (N, *input_shape), shared by all members, and each member's training
  positions and labels ((K, n_max) int64 each);
- in training, per member: parameters, gradients, momentum, buffers and one SGD step's activations;
- in evaluation (the Trainer's gradients and momentum freed first, zoo/generate.py): parameters and
  buffers, and the forward pass of ``chunk`` samples per member (gathered inputs, layout copies,
  activations, logits).

The per-member costs are *measured*, not modelled: two SGD steps of real populations of 2 and 4
members on synthetic inputs of the data's shape, and one evaluation chunk, under ``allocated_peak``;
the pool's bytes are counted from its shape. Every term is linear in K (members share nothing but
the pool), so

    train_peak(K)   = data + K * index + fixed + K * train_member     (fixed, train_member from K = 2, 4)
    eval_peak(K, c) = data + K * (3 * index + state) + K * c * eval_sample

and ``peak(K, c)`` is their maximum.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from weightsim.data.shapes import DataShape
from weightsim.data.tasks import Task, TaskSet
from weightsim.errors import ConfigError
from weightsim.zoo.population import population_module

MAX_CHUNK = 4096  # samples per member per evaluation chunk, at most


def device_of(accelerator: str) -> torch.device:
    """The device a population of ``zoo.accelerator`` trains on (auto: the GPU when there is one)."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("gpu", "cuda"):
        raise ConfigError(f"zoo.accelerator={accelerator} but torch sees no CUDA device: use zoo.accelerator=auto or cpu")
    return torch.device("cpu")


@contextmanager
def kineto_lines_dropped() -> Iterator[None]:
    """Drop the ``USDT: ... profiler_start/stop`` lines that torch's profiler library writes to the
    process's stderr (file descriptor 2, below Python) on every start and stop; any other line
    written meanwhile is passed on to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith("USDT:")]
            sys.stderr.write("".join(kept))


def allocated_peak(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes held by the tensors that ``fn`` allocates on ``device`` while it runs.

    CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before. CPU: torch's profiler
    records every allocation and free of torch's CPU allocator, with its address; the peak is the
    running sum's maximum over the blocks allocated during the call (a free of an earlier block is
    skipped: the profiler's size of it can be stale, from an earlier profile at the same address).
    That is the quantity CUDA reports, counted by torch itself: the process's resident memory
    (/proc, tracemalloc) would also hold the interpreter, libraries and glibc's cached free blocks.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with kineto_lines_dropped():
        prof.start()
    try:
        fn()
    finally:  # a failing fn must not leave the profiler running: it crashes the interpreter at exit
        with kineto_lines_dropped():
            prof.stop()
    events = []  # (time, address, bytes): + on allocation, - on free

    def walk(node) -> None:
        f = node.extra_fields
        if type(f).__name__ == "_ExtraFields_Allocation" and f.device.type == "cpu":
            events.append((node.start_time_ns, f.ptr, f.alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    live, peak, held = 0, 0, {}
    for _, ptr, size in sorted(events, key=lambda e: e[0]):
        if size > 0:
            held[ptr] = size
            live += size
        elif ptr in held:  # a block allocated before the call (or in an earlier profile) never counts
            live -= held.pop(ptr)
        peak = max(peak, live)
    return int(peak)


@dataclass
class PopulationMemory:
    """Bytes a population needs on its device (module docstring): the pool, per-member index tables,
    what training measured per member, and what evaluation needs per member and sample."""

    data: int  # the pool x
    index: int  # one member's training positions and labels
    fixed: int  # training, independent of K
    train_member: int  # training, per member: parameters, gradients, momentum, buffers, activations
    state_member: int  # parameters and buffers of one member (kept in evaluation)
    eval_sample: int  # evaluation, per member and sample of a chunk
    samples: int  # the largest task's training (or test) set: no chunk is larger

    def train_peak(self, k: int) -> int:
        return self.data + k * self.index + self.fixed + k * self.train_member

    def eval_peak(self, k: int, chunk: int) -> int:
        # index: the training tables, and evaluation's own padded positions and labels (on the CPU)
        return self.data + k * (3 * self.index + self.state_member) + k * chunk * self.eval_sample

    def peak(self, k: int, chunk: int) -> int:
        return max(self.train_peak(k), self.eval_peak(k, chunk))

    def population_size(self, budget: float, total: int) -> int:
        """Most members (1..total) whose training and one-sample evaluation chunks fit ``budget`` bytes."""
        per = self.index + self.train_member
        room = budget - self.data - self.fixed
        k = int(room // per) if per > 0 else total
        while k > 1 and self.eval_peak(k, 1) > budget:
            k -= 1
        return max(1, min(total, k))

    def eval_chunk(self, budget: float, k: int) -> int:
        """Most samples per member (1..MAX_CHUNK, and no more than a task has) whose evaluation chunk
        fits ``budget`` bytes."""
        room = budget - self.eval_peak(k, 0)
        return int(max(1, min(MAX_CHUNK, self.samples, room // max(1, k * self.eval_sample))))


def synthetic_taskset(shape: DataShape, n: int, members: int) -> TaskSet:
    """``members`` tasks of the shape's classes, each with the same n synthetic samples (a pool of n):
    what a measuring population trains on."""
    x = shape.sample(n)
    y = torch.arange(n) % shape.classes_per_task
    idx = torch.arange(n)
    tasks = [Task(i, list(range(shape.classes_per_task)), [str(c) for c in range(shape.classes_per_task)], "train",
                  idx, y, idx, y) for i in range(members)]
    return TaskSet(shape.name, x, y, tasks, tuple(shape.input_shape), shape.classes_per_task, dict(shape.info))


def measure_population(build: Callable[[], nn.Module], shape: DataShape, zc, device: torch.device | None = None,
                       eval_chunk: int = 64) -> PopulationMemory:
    """PopulationMemory of populations of ``build`` nets on ``shape``'s data trained as ``zc`` says
    (a ZooConfig), measured on ``device`` (default: zc.accelerator's) with synthetic inputs."""
    device = device or device_of(zc.accelerator)
    n = max(zc.batch_size, eval_chunk)
    ts = synthetic_taskset(shape, n, 4)
    x = ts.x.to(device)
    ts.x = x  # the pool is on the device before the measurement: it is counted from its shape

    def train(k: int) -> Callable[[], None]:
        def run() -> None:
            module = population_module(build, ts, [(t, 0) for t in range(k)], zc).to(device)
            opt = module.configure_optimizers()
            opt = opt["optimizer"] if isinstance(opt, dict) else opt
            for step in range(2):  # the second step holds momentum and gradients from the first
                loss = module.training_step(torch.tensor(step), step)
                module.zero_grad(set_to_none=True)  # as Lightning: after the forward, before backward
                loss.backward()
                module.configure_gradient_clipping(opt)
                opt.step()
        return run

    with torch.random.fork_rng(devices=[]):
        # the slope between 2 and 4 members (a population of 1 can take other paths than K > 1)
        two, four = allocated_peak(train(2), device), allocated_peak(train(4), device)
        module = population_module(build, ts, [(0, 0), (1, 0)], zc).to(device)
        idx = torch.stack([t.test_idx[:eval_chunk] for t in ts.tasks[:2]])  # (2, chunk): one row per member
        y = torch.stack([t.test_y[:eval_chunk] for t in ts.tasks[:2]])
        ev = allocated_peak(lambda: module.evaluate(idx, y, [idx.shape[1]] * 2, eval_chunk), device)
    state = sum(v.numel() * v.element_size() for v in module.state().values()) // 2
    index = 2 * 8 * max(shape.train)  # positions and labels, int64, padded to the largest task
    member = max(0, (four - two) // 2)
    return PopulationMemory(shape.x_bytes, index, max(0, two - 2 * member), member, state,
                            math.ceil(ev / (2 * idx.shape[1])), max(shape.train + shape.test))
