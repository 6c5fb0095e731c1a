"""Population training: K nets of one architecture trained together in one LightningModule.

Member k has its own init seed and its own data order; its parameters are slices [k] of stacked
parameters. The forward pass runs all members at once (zoo/many.py): as one K-times-wider net (zoo/stacked.py)
where the architecture allows, else ``vmap(functional_call)`` over the member axis. Because the
loss is *summed* over members and SGD is element-wise, every member takes exactly the step it
would take alone.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import stack_module_state

from weightsim.data.tasks import Task, TaskSet
from weightsim.zoo.many import ManyNets

def member_seeds(base_seed: int, task: int, seed: int) -> tuple[int, int]:
    """(init seed, data-order seed) of net (task, seed): independent streams per task and seed."""
    a, b = np.random.SeedSequence([base_seed, task, seed]).generate_state(2)
    return int(a), int(b)


def init_member(build, init_seed: int) -> nn.Module:
    """A freshly initialized net, drawn from its own seed without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return build()


class MemberStreams:
    """Data order per member: an endless concatenation of seeded permutations of its task's
    training positions; step t takes positions [tB, (t+1)B) of that stream.

    Member k's stream depends only on (n_k, data_seeds[k], batch_size): never on the population
    it is trained in, which is what makes a member equal to the same seed trained alone.

    Each member keeps a window of the ``span`` epochs its current batch can touch, (K, span, n_max),
    and draws a new permutation only when its own stream enters a new epoch: a step costs the same
    at step 10 000 as at step 1, however far apart the members' epoch counts have drifted.

    The window lives on ``device`` (``to``): which members enter a new epoch is integer arithmetic
    on the host, new permutations are drawn on the host (the same generator bit for bit) and
    copied in, and ``positions`` indexes the window where it lies, without waiting for the device.
    """

    def __init__(self, sizes: list[int], data_seeds: list[int], batch_size: int, device: torch.device | str = "cpu"):
        self.sizes, self.seeds, self.b = sizes, data_seeds, batch_size
        self.n = torch.tensor(sizes, dtype=torch.int64)  # (K,)
        # epochs one batch of B positions can touch in a stream of epoch length n: ceil(B / n) + 1
        self.span = max(-(-batch_size // n) + 1 for n in sizes)
        self.first = torch.full((len(sizes),), -1, dtype=torch.int64)  # (K,) epoch in window slot 0 (host)
        self.window = torch.zeros(len(sizes), self.span, max(sizes), dtype=torch.int64)  # (K, span, n_max)
        self.to(device)

    def to(self, device: torch.device | str) -> "MemberStreams":
        """Hold the window (and the index helpers) on ``device``; returns self."""
        self.window = self.window.to(device)
        self.n_dev = self.n.to(device)  # (K,)
        self.rows = torch.arange(len(self.sizes), device=device)[:, None]  # (K, 1)
        self.offsets = torch.arange(self.b, device=device)  # (B,)
        return self

    def permutation(self, k: int, e: int) -> Tensor:
        """(n_k,) member k's positions in epoch e: a permutation of range(n_k) seeded by (seed, e)."""
        g = torch.Generator().manual_seed(self.seeds[k] * 1_000_003 + e)
        return torch.randperm(self.sizes[k], generator=g)

    def _slide(self, k: int, lo: int) -> None:
        """Move member k's window to epochs [lo, lo + span), keeping the epochs it already holds."""
        shift = lo - int(self.first[k])
        keep = self.span - shift if 0 <= self.first[k] and 0 < shift < self.span else 0
        if keep:
            self.window[k, :keep] = self.window[k, shift:].clone()
        for j in range(keep, self.span):
            perm = self.permutation(k, lo + j)
            if self.window.is_cuda:  # pinned: the copy is queued, the host goes on
                perm = perm.pin_memory()
            self.window[k, j, :self.sizes[k]].copy_(perm, non_blocking=True)
        self.first[k] = lo

    def positions(self, step: int) -> Tensor:
        """(K, B) positions into each member's task arrays for SGD step ``step``, on the window's device."""
        lo = (step * self.b) // self.n  # (K,) each member's first epoch in this batch (host tensor)
        for k in (lo != self.first).nonzero().flatten().tolist():  # only members entering a new epoch
            self._slide(k, int(lo[k]))
        g = step * self.b + self.offsets  # (B,) offsets into every member's stream
        e = g[None] // self.n_dev[:, None]  # (K, B) epoch of each position
        off = g[None] % self.n_dev[:, None]  # (K, B) offset inside that epoch's permutation
        lo = (step * self.b) // self.n_dev  # (K,) each member's first epoch (= window slot 0)
        return self.window[self.rows, e - lo[:, None], off]


class PopulationModule(L.LightningModule):
    """K members of one architecture, trained with SGD on their own tasks and data orders.

    x: the dataset's shared sample pool (N, *input_shape); tasks[k] is member k's task.
    """

    def __init__(self, members: list[nn.Module], x: Tensor, tasks: list[Task], data_seeds: list[int],
                 batch_size: int, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 grad_clip: float | None = None, vectorize: str = "auto", lr_milestones: list[int] = (),
                 lr_gamma: float = 0.1):
        super().__init__()
        params, buffers = stack_module_state(members)
        self.names = list(params)
        # real parameters of the module (Lightning moves and saves them); dots are not allowed in names
        self.stacked = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v) for k, v in params.items()})
        self.buffer_names = list(buffers)
        for k, v in buffers.items():
            self.register_buffer("buf__" + k.replace(".", "__"), v.clone())
        # the architecture without data, kept out of the module tree (Lightning must not move it)
        self.__dict__["template"] = copy.deepcopy(members[0]).to("meta")
        self.k = len(members)
        # the many-net forward, kept out of the module tree like the template
        self.__dict__["many"] = ManyNets(self.template, self.k, tuple(x.shape[1:]), vectorize)
        self.vectorize = self.many.mode  # the mode in use: stacked, vmap or loop
        self.register_buffer("x", x, persistent=False)
        n_max = max(len(t.train_idx) for t in tasks)
        pad = lambda v: F.pad(v, (0, n_max - len(v)))  # noqa: E731
        self.register_buffer("train_idx", torch.stack([pad(t.train_idx) for t in tasks]), persistent=False)
        self.register_buffer("train_y", torch.stack([pad(t.train_y) for t in tasks]), persistent=False)
        self.streams = MemberStreams([len(t.train_idx) for t in tasks], data_seeds, batch_size)
        self.lr, self.momentum, self.weight_decay, self.grad_clip = lr, momentum, weight_decay, grad_clip
        self.lr_milestones, self.lr_gamma = list(lr_milestones), lr_gamma
        self.member_loss = torch.zeros(self.k)  # (K,) on the module's device: read it only to show it

    # -- stacked state -------------------------------------------------------------------------
    def params(self) -> dict[str, Tensor]:
        return {k: self.stacked[k.replace(".", "__")] for k in self.names}

    def buffers_(self) -> dict[str, Tensor]:
        return {k: getattr(self, "buf__" + k.replace(".", "__")) for k in self.buffer_names}

    def state(self) -> dict[str, Tensor]:
        """Stacked state (params and buffers) with the member axis first, names as in the template."""
        return {**{k: v.detach() for k, v in self.params().items()}, **self.buffers_()}

    def forward(self, x: Tensor) -> Tensor:
        """x: (K, B, *input_shape) -> logits (K, B, C), in the mode of ``ManyNets``."""
        return self.many(self.params(), self.buffers_(), x)[0]

    # -- training ------------------------------------------------------------------------------
    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """The batch is the step number: it stays on the host (``int(step)`` on a device tensor
        would wait for the device every step)."""
        return batch

    def training_step(self, step: Tensor | int, _batch_idx: int) -> Tensor:
        """One SGD step of every member: ``step`` (a host int or host tensor) picks each member's batch."""
        if self.streams.window.device != self.device:
            self.streams.to(self.device)
        pos = self.streams.positions(int(step))  # (K, B), on the device
        rows = self.streams.rows
        x = self.x[self.train_idx[rows, pos]]
        y = self.train_y[rows, pos]
        logits = self(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(self.k, -1).mean(1)
        self.member_loss = loss.detach()  # stays on the device: no wait here
        return loss.sum()  # summed, not averaged: each member's step is its own

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip each member's gradient norm separately (never over the whole population)."""
        if self.grad_clip is None:
            return
        grads = [p.grad for p in self.stacked.values() if p.grad is not None]
        norms = torch.sqrt(sum(g.pow(2).flatten(1).sum(1) for g in grads))  # (K,)
        scale = (self.grad_clip / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))

    def configure_optimizers(self):
        # one fused kernel per tensor where torch has it: the update reads and writes each stacked
        # parameter, gradient and momentum once (~10 % of a 96-member mlp4 step on a CPU)
        fused = self.device.type in ("cpu", "cuda")
        sgd = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum,
                              weight_decay=self.weight_decay, fused=fused or None)
        if not self.lr_milestones:
            return sgd
        # lr_t = lr * gamma^(number of milestones <= t), stepped after every SGD step
        drops = torch.optim.lr_scheduler.MultiStepLR(sgd, self.lr_milestones, self.lr_gamma)
        return {"optimizer": sgd, "lr_scheduler": {"scheduler": drops, "interval": "step"}}

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, idx: Tensor, y: Tensor, sizes: list[int], chunk: int = 512) -> tuple[Tensor, Tensor]:
        """Per-member accuracy and mean loss on (K, n_max) padded sample positions (eval mode),
        ``chunk`` samples per member at a time; returns two (K,) CPU tensors.

        A chunk runs only the members whose task still has samples in it (vmap and loop run any
        number of members; the stacked net is built for all K and runs them all): where task sizes
        differ a lot (NameData), the small tasks' members stop computing on padding. Which members
        a chunk runs is decided on the host from ``sizes``; the chunk loop never waits for the device
        (one copy back at the end)."""
        self.template.eval()
        dev = self.device
        correct = torch.zeros(self.k, device=dev)
        total_loss = torch.zeros(self.k, device=dev)
        n = torch.tensor(sizes, device=dev)
        idx, y = idx.to(dev), y.to(dev)
        params, buffers = self.params(), self.buffers_()
        n_host = torch.tensor(sizes)  # (K,) on the host: which members a chunk runs is decided here
        subsets: dict[int, Tensor] = {}  # live count -> those members' indices, on the device
        for s in range(0, idx.shape[1], chunk):
            live = n_host > s  # (K,) members with samples at positions >= s
            count = int(live.sum())  # a host tensor: no wait for the device
            if self.many.mode == "stacked" or count == self.k:
                rows, sub = slice(None), (lambda v: v)  # noqa: E731  (all members, no copy)
            else:
                if count not in subsets:  # one copy to the device per subset, not per chunk
                    subsets[count] = live.nonzero().flatten().to(dev)
                rows = subsets[count]
                sub = lambda v, r=rows: v[r]  # noqa: E731
            i, t = idx[rows, s:s + chunk], y[rows, s:s + chunk]
            valid = torch.arange(s, s + i.shape[1], device=dev)[None] < n[rows, None]  # (K', w) samples, not padding
            logits = self.many({k: sub(v) for k, v in params.items()}, {k: sub(v) for k, v in buffers.items()},
                               self.x[i])[0]
            loss = F.cross_entropy(logits.flatten(0, 1), t.flatten(), reduction="none").view_as(i)
            correct[rows] += member_correct(logits, t, valid)
            total_loss[rows] += (loss * valid).sum(1)
        self.template.train()
        return (correct / n).cpu(), (total_loss / n).cpu()


def member_correct(logits: Tensor, y: Tensor, valid: Tensor) -> Tensor:
    """Correct predictions per member: logits (K, B, C), labels y (K, B) and valid (K, B) (True
    where a position holds a sample, False on padding) -> (K,) float.

    correct_k = sum_b [argmax_c logits[k, b, c] == y[k, b]] * valid[k, b]: one masked comparison
    for all members, summed per member (no loop over members, nothing read back to the host)."""
    return ((logits.argmax(-1) == y) & valid).sum(1).to(logits.dtype)


def steps_for(epochs: float, tasks: list[Task], batch_size: int) -> int:
    """Training length in SGD steps: ``epochs`` passes over the largest task's training set,
    the same for every net of a zoo so that populations can mix tasks."""
    return max(1, math.ceil(epochs * max(len(t.train_idx) for t in tasks) / batch_size))


def population_module(build: Callable[[], nn.Module], taskset: TaskSet, nets: list[tuple[int, int]],
                      zc) -> PopulationModule:
    """The untrained population of nets [(task, seed), ...]: each member drawn from its own init
    seed, fed in its own data order, trained as ``zc`` (a ZooConfig) says."""
    seeds = [member_seeds(zc.base_seed, t, s) for t, s in nets]
    milestones = zc.lr_milestones(zc.total_steps(taskset.tasks))
    return PopulationModule([init_member(build, a) for a, _ in seeds], taskset.x, [taskset.tasks[t] for t, _ in nets],
                            [b for _, b in seeds], zc.batch_size, zc.lr, zc.momentum, zc.weight_decay, zc.grad_clip,
                            zc.vectorize, milestones, zc.lr_gamma)
