"""Population training: K nets of one architecture trained together in one LightningModule.

Member k has its own init seed and its own data order; its parameters are slices [k] of stacked
parameters. The forward pass runs all members at once: as one K-times-wider net (zoo/stacked.py)
where the architecture allows, else ``vmap(functional_call)`` over the member axis. Because the
loss is *summed* over members and SGD is element-wise, every member takes exactly the step it
would take alone.
"""

from __future__ import annotations

import contextlib
import copy
import math
from functools import partial

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torchmetrics.functional.classification import multiclass_stat_scores

from weightsim.data.tasks import Task
from weightsim.errors import ConfigError
from weightsim.zoo.stacked import from_stacked, stacked_net, to_stacked, why_not_stackable

VECTORIZE = ("auto", "stacked", "vmap", "loop")


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
    """

    def __init__(self, sizes: list[int], data_seeds: list[int], batch_size: int):
        self.sizes, self.seeds, self.b = sizes, data_seeds, batch_size
        self.n = torch.tensor(sizes, dtype=torch.int64)  # (K,)
        self._cache: dict[int, Tensor] = {}

    def _epoch(self, e: int) -> Tensor:
        """(K, max n) positions of epoch e; row k is a permutation of range(n_k) (zero-padded)."""
        if e not in self._cache:
            n_max = max(self.sizes)
            rows = []
            for n, s in zip(self.sizes, self.seeds):
                g = torch.Generator().manual_seed(s * 1_000_003 + e)
                rows.append(F.pad(torch.randperm(n, generator=g), (0, n_max - n)))
            self._cache[e] = torch.stack(rows)
        return self._cache[e]

    def positions(self, step: int) -> Tensor:
        """(K, B) positions into each member's task arrays for SGD step ``step``."""
        g = step * self.b + torch.arange(self.b)  # (B,) offsets into every member's stream
        e = g[None] // self.n[:, None]  # (K, B) epoch of each position
        off = g[None] % self.n[:, None]  # (K, B) offset inside that epoch's permutation
        lo, hi = int(e.min()), int(e.max())
        self._cache = {k: v for k, v in self._cache.items() if k >= lo}
        perms = torch.stack([self._epoch(i) for i in range(lo, hi + 1)])  # (E, K, n_max)
        return perms[e - lo, torch.arange(len(self.sizes))[:, None], off]


def choose_vectorize(vectorize: str, template: nn.Module, sample_shape: tuple[int, ...]) -> str:
    """The mode that runs ``template``: stacked, vmap or loop (auto: stacked where the net allows)."""
    if vectorize not in VECTORIZE:
        raise ConfigError(f"zoo.vectorize='{vectorize}': choose from {', '.join(VECTORIZE)}")
    if vectorize in ("auto", "stacked"):
        why = why_not_stackable(template, tuple(sample_shape))
        if why and vectorize == "stacked":
            raise ConfigError(f"zoo.vectorize=stacked cannot run this net: {why}; use zoo.vectorize=auto "
                              f"(stacked where it can, else vmap) or vmap")
        vectorize = "vmap" if why else "stacked"
    return vectorize


def first_tensor(out) -> Tensor:
    """A module's output as one tensor: a tuple (a recurrent layer's (sequence, last states)) gives its first."""
    return out[0] if isinstance(out, (tuple, list)) else out


@contextlib.contextmanager
def capturing(net: nn.Module, names: tuple[str, ...], into: dict[str, Tensor], convert=lambda y: y):
    """While inside, the output of each module of ``net`` named in ``names`` goes to ``into[name]``
    (through ``convert``)."""
    hooks = [net.get_submodule(n).register_forward_hook(
        lambda _m, _i, out, n=n: into.__setitem__(n, convert(first_tensor(out)))) for n in names]
    try:
        yield into
    finally:
        for h in hooks:
            h.remove()


class ManyNets:
    """The forward pass of K nets of one architecture at once, each with its own weights and input.

    Called with stacked params / buffers (name -> (K, *shape), names as in ``template``) and
    x (K, B, *input_shape); returns logits (K, B, C) and, for each module named in ``capture``,
    its output (K, B, ...) (a tuple output gives its first element). vmap and loop also run any
    subset of the members (a leading axis of K' < K); stacked runs all K. Modes:

    stacked: the members as one K-times-wider net (zoo/stacked.py): grouped channels-last
    convolutions, BN over K*C channels, batched matmuls; the fastest where the net allows it.
    vmap: one batched op per layer (batched matmul; grouped convolution for convs).
    loop: the members one after another, each on its own slices of the stacked tensors (the
    same parameters, the same summed loss, one optimizer): on a CPU this beats grouped
    convolutions at large inputs; the per-run overhead stays amortized either way.
    The template's train / eval mode is the mode of every member (BN: batch or running statistics).
    """

    def __init__(self, template: nn.Module, k: int, sample_shape: tuple[int, ...], vectorize: str = "auto"):
        self.template, self.k = template, k
        self.mode = choose_vectorize(vectorize, template, sample_shape)
        if self.mode == "stacked":
            self.wide_net, self.ctx = stacked_net(template, k)

    def __call__(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
                 capture: tuple[str, ...] = ()) -> tuple[Tensor, dict[str, Tensor]]:
        capture = tuple(capture)
        if self.mode == "stacked":
            self.ctx.params, self.ctx.buffers = params, buffers
            self.wide_net.train(self.template.training)
            with capturing(self.wide_net, capture, {}, partial(from_stacked, k=self.k)) as acts:
                return self.wide_net(to_stacked(x)), acts

        def one(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            with capturing(self.template, capture, {}) as acts:
                return functional_call(self.template, (p, b), (xb,)), acts

        if self.mode == "vmap":
            return vmap(one)(params, buffers, x)
        per = {k: v.unbind(0) for k, v in params.items()}  # one backward node per tensor
        outs = [one({k: v[i] for k, v in per.items()}, {k: v[i] for k, v in buffers.items()}, x[i])
                for i in range(len(x))]
        return torch.stack([o for o, _ in outs]), {n: torch.stack([a[n] for _, a in outs]) for n in capture}


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
        """x: (K, B, *input_shape) -> logits (K, B, C), in the mode of ``ManyNets``."""
        return self.many(self.params(), self.buffers_(), x)[0]

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
        differ a lot (NameData), the small tasks' members stop computing on padding."""
        self.template.eval()
        correct = torch.zeros(self.k, device=self.device)
        total_loss = torch.zeros(self.k, device=self.device)
        n = torch.tensor(sizes, device=self.device)
        params, buffers = self.params(), self.buffers_()
        for s in range(0, idx.shape[1], chunk):
            rows = torch.arange(self.k, device=self.device)
            if self.many.mode != "stacked":
                rows = rows[n > s]  # the members with samples at positions >= s
            sub = (lambda v: v[rows]) if len(rows) < self.k else (lambda v: v)  # noqa: E731
            i, t = idx[rows.cpu(), s:s + chunk].to(self.device), y[rows.cpu(), s:s + chunk].to(self.device)
            valid = (torch.arange(s, s + i.shape[1], device=self.device)[None] < n[rows, None]).float()
            logits = self.many({k: sub(v) for k, v in params.items()}, {k: sub(v) for k, v in buffers.items()},
                               self.x[i])[0]
            loss = F.cross_entropy(logits.flatten(0, 1), t.flatten(), reduction="none").view_as(valid)
            correct[rows] += member_correct(logits, t, valid.sum(1).long().tolist())  # samples per member here
            total_loss[rows] += (loss * valid).sum(1)
        self.template.train()
        return (correct / n).cpu(), (total_loss / n).cpu()


def member_correct(logits: Tensor, y: Tensor, counts: list[int]) -> Tensor:
    """Correct predictions per member: logits (K, B, C) and labels y (K, B), of which member k's first
    counts[k] positions are samples (the rest padding) -> (K,) float.

    torchmetrics' multiclass true positives (micro: correct predictions), member by member: its
    one-call per-member form (``multidim_average="samplewise"``) one-hot encodes every prediction and,
    to skip padding, copies and masks them, 10-20x the time of a comparison; one call per member
    on its own samples is the plain comparison, at about the cost of the masked sum it replaced.
    """
    pred = logits.argmax(-1)
    # a member whose task has run out of samples in this chunk has none: 0 correct (torchmetrics
    # cannot reshape an empty batch)
    return torch.stack([multiclass_stat_scores(pred[k, :m], y[k, :m], num_classes=logits.shape[-1], average="micro",
                                               validate_args=False)[0] if m else pred.new_zeros(())
                        for k, m in enumerate(counts)]).to(logits.dtype)


def steps_for(epochs: float, tasks: list[Task], batch_size: int) -> int:
    """Training length in SGD steps: ``epochs`` passes over the largest task's training set,
    the same for every net of a zoo so that populations can mix tasks."""
    return max(1, math.ceil(epochs * max(len(t.train_idx) for t in tasks) / batch_size))
