"""Population training: K nets of one architecture trained together in one LightningModule.

Member k has its own init seed and its own data order; its parameters are slices [k] of stacked
parameters, and its forward pass is ``vmap(functional_call)`` over the member axis. Because the
loss is *summed* over members and SGD is element-wise, every member takes exactly the step it
would take alone.
"""

from __future__ import annotations

import copy
import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from weightsim.data.tasks import Task


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
    training positions; step t takes positions [tB, (t+1)B) of that stream."""

    def __init__(self, sizes: list[int], data_seeds: list[int], batch_size: int):
        self.sizes, self.seeds, self.b = sizes, data_seeds, batch_size
        self._cache: dict[int, Tensor] = {}

    def _epoch(self, e: int) -> Tensor:
        """(K, max n) positions of epoch e; row k is a permutation of range(n_k) (padded)."""
        if e not in self._cache:
            n_max = max(self.sizes)
            rows = []
            for n, s in zip(self.sizes, self.seeds):
                g = torch.Generator().manual_seed(s * 1_000_003 + e)
                rows.append(F.pad(torch.randperm(n, generator=g), (0, n_max - n)))
            self._cache = {k: v for k, v in self._cache.items() if k >= e - 1}
            self._cache[e] = torch.stack(rows)
        return self._cache[e]

    def positions(self, step: int) -> Tensor:
        """(K, B) positions into each member's task arrays."""
        out = []
        for k, n in enumerate(self.sizes):
            start = step * self.b
            e, off = divmod(start, n)
            take = []
            while len(take) < self.b:
                perm = self._epoch(e)[k, :n]
                chunk = perm[off:off + self.b - len(take)].tolist()
                take += chunk
                e, off = e + 1, 0
            out.append(take)
        return torch.tensor(out)


class PopulationModule(L.LightningModule):
    """K members of one architecture, trained with SGD on their own tasks and data orders.

    x: the dataset's shared sample pool (N, *input_shape); tasks[k] is member k's task.
    """

    def __init__(self, members: list[nn.Module], x: Tensor, tasks: list[Task], data_seeds: list[int],
                 batch_size: int, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 grad_clip: float | None = None):
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
        self.register_buffer("x", x, persistent=False)
        n_max = max(len(t.train_idx) for t in tasks)
        pad = lambda v: F.pad(v, (0, n_max - len(v)))  # noqa: E731
        self.register_buffer("train_idx", torch.stack([pad(t.train_idx) for t in tasks]), persistent=False)
        self.register_buffer("train_y", torch.stack([pad(t.train_y) for t in tasks]), persistent=False)
        self.streams = MemberStreams([len(t.train_idx) for t in tasks], data_seeds, batch_size)
        self.lr, self.momentum, self.weight_decay, self.grad_clip = lr, momentum, weight_decay, grad_clip
        self.member_loss = torch.zeros(self.k)

    # -- stacked state -------------------------------------------------------------------------
    def params(self) -> dict[str, Tensor]:
        return {k: self.stacked[k.replace(".", "__")] for k in self.names}

    def buffers_(self) -> dict[str, Tensor]:
        return {k: getattr(self, "buf__" + k.replace(".", "__")) for k in self.buffer_names}

    def state(self) -> dict[str, Tensor]:
        """Stacked state (params and buffers) with the member axis first, names as in the template."""
        return {**{k: v.detach() for k, v in self.params().items()}, **self.buffers_()}

    def forward(self, x: Tensor) -> Tensor:
        """x: (K, B, *input_shape) -> logits (K, B, C)."""
        def one(p, b, xb):
            return functional_call(self.template, (p, b), (xb,))
        return vmap(one)(self.params(), self.buffers_(), x)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, step: Tensor, _batch_idx: int) -> Tensor:
        pos = self.streams.positions(int(step)).to(self.device)  # (K, B)
        rows = torch.arange(self.k, device=self.device)[:, None]
        x = self.x[self.train_idx[rows, pos]]
        y = self.train_y[rows, pos]
        logits = self(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(self.k, -1).mean(1)
        self.member_loss = loss.detach().cpu()
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
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, idx: Tensor, y: Tensor, sizes: list[int], chunk: int = 512) -> tuple[Tensor, Tensor]:
        """Per-member accuracy and mean loss on (K, n_max) padded sample positions (eval mode)."""
        self.template.eval()
        correct = torch.zeros(self.k, device=self.device)
        total_loss = torch.zeros(self.k, device=self.device)
        n = torch.tensor(sizes, device=self.device)
        for s in range(0, idx.shape[1], chunk):
            i, t = idx[:, s:s + chunk].to(self.device), y[:, s:s + chunk].to(self.device)
            valid = (torch.arange(s, s + i.shape[1], device=self.device)[None] < n[:, None]).float()
            logits = self(self.x[i])
            loss = F.cross_entropy(logits.flatten(0, 1), t.flatten(), reduction="none").view_as(valid)
            correct += ((logits.argmax(-1) == t).float() * valid).sum(1)
            total_loss += (loss * valid).sum(1)
        self.template.train()
        return (correct / n).cpu(), (total_loss / n).cpu()


def steps_for(epochs: float, tasks: list[Task], batch_size: int) -> int:
    """Training length in SGD steps: ``epochs`` passes over the largest task's training set,
    the same for every net of a zoo so that populations can mix tasks."""
    return max(1, math.ceil(epochs * max(len(t.train_idx) for t in tasks) / batch_size))
