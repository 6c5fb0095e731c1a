"""Students: N MLPs of one architecture trained together to imitate a teacher's outputs (MSE).

The students are one population: stacked parameters (N, *shape) run by the zoo's many-net forward
(``weightsim.zoo.many.ManyNets``: one batched matmul per layer), the loss summed over students.
The zoo's ``PopulationModule`` is not reused: it trains with SGD on class labels from per-task data
streams; E&C needs MSE to teacher outputs, Adam with a plateau schedule or L-BFGS, and fine-tuning
of nets whose layers change size between steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import stack_module_state

from weightsim.errors import ConfigError
from weightsim.nets.mlp import linear_stack
from weightsim.recover.teachers import activation_module
from weightsim.zoo.many import ManyNets

OPTIMIZERS = ("lbfgs", "adam")


def mlp(d_in: int, widths: list[int], d_out: int, activation: str) -> nn.Sequential:
    """Linear, act, ..., Linear (float64): the nets' one MLP builder with a covered activation."""
    return nn.Sequential(*linear_stack([d_in, *widths, d_out], lambda: activation_module(activation))).double()


@dataclass
class Students:
    """N students: template (the architecture), params name -> (N, *shape), losses (N,) final train MSE,
    history: list of (step, losses (N,)) recorded during training."""

    template: nn.Sequential
    params: dict[str, Tensor]
    losses: Tensor
    history: list[tuple[int, list[float]]]

    @property
    def n(self) -> int:
        return len(self.losses)

    def layer(self, i: int) -> tuple[Tensor, Tensor]:
        """Weight (N, out, in) and bias (N, out) of the template's i-th Linear layer."""
        return self.params[f"{2 * i}.weight"], self.params[f"{2 * i}.bias"]

    def outputs(self, x: Tensor) -> Tensor:
        """x (n, d_in) -> (N, n, d_out)."""
        many = ManyNets(self.template, self.n, tuple(x.shape[1:]), "auto")
        with torch.no_grad():
            return many(self.params, {}, x.expand(self.n, *x.shape))[0]


def init_students(d_in: int, widths: list[int], d_out: int, activation: str, n: int, seed: int) -> Students:
    """N students with PyTorch's default Linear init, student k drawn from seed (seed, k)."""
    from weightsim.zoo.population import init_member  # (imports Lightning: here, not where options are checked)

    build = lambda: mlp(d_in, widths, d_out, activation)  # noqa: E731
    members = [init_member(build, seed * 1_000_003 + k) for k in range(n)]
    params, _ = stack_module_state(members)
    return Students(build().to("meta"), {k: v.detach() for k, v in params.items()}, torch.full((n,), math.nan), [])


def fit(params: list[Tensor], member_losses: Callable[[Tensor | None], Tensor], n_samples: int,
        optimizer: str = "lbfgs", steps: int = 1500, lr: float = 1e-3, batch_size: int = 512,
        seed: int = 0, record_every: int = 100, target: float = 0.0, stall: float = 0.0
        ) -> tuple[Tensor, list[tuple[int, list[float]]]]:
    """Minimize sum_k member_losses(idx)[k] over ``params`` (trained in place); returns the final
    per-member losses (K,) on all samples and their history.

    lbfgs: full batch, ``steps`` iterations at most, strong-Wolfe line search (one line search for the
    summed loss). adam: the published schedule, minibatches of ``batch_size``, ``steps`` epochs at most,
    ReduceLROnPlateau (factor 1/sqrt(10), patience 100, cooldown 200, threshold 0) on the epoch loss,
    stop once the learning rate reaches min_lr = 1e-7.
    Early stops, checked every ``record_every`` iterations (epochs): the members' median loss <= ``target``
    (> 0); lbfgs only: the last ``record_every`` iterations lowered the summed loss by less than the
    fraction ``stall`` (> 0) of it.
    """
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer '{optimizer}': choose from {', '.join(OPTIMIZERS)}")
    for p in params:
        p.requires_grad_(True)
    history: list[tuple[int, list[float]]] = []
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=1, max_iter=record_every, history_size=100,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-14, tolerance_change=0)
        last = {}

        def closure():
            opt.zero_grad()
            losses = member_losses(None)
            last["l"] = losses.detach()
            total = losses.sum()
            total.backward()
            return total
        for done in range(0, steps, record_every):
            opt.param_groups[0]["max_iter"] = min(record_every, steps - done)
            opt.step(closure)
            before = sum(history[-1][1]) if history else math.inf
            history.append((done + opt.param_groups[0]["max_iter"], last["l"].tolist()))
            if not torch.isfinite(last["l"]).all() or float(last["l"].max()) < 1e-28 \
                    or reached(last["l"], target) or (stall > 0 and float(last["l"].sum()) > (1 - stall) * before):
                break
    else:
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=10 ** -0.5, patience=100, cooldown=200,
                                                           threshold=0, min_lr=1e-7)
        g = torch.Generator().manual_seed(seed)
        for epoch in range(steps):
            total = 0.0
            for idx in torch.randperm(n_samples, generator=g).split(batch_size):
                opt.zero_grad()
                loss = member_losses(idx).sum()
                loss.backward()
                opt.step()
                total += float(loss) * len(idx) / n_samples
            sched.step(total)
            if epoch % record_every == 0:
                with torch.no_grad():
                    history.append((epoch, member_losses(None).tolist()))
                if reached(torch.tensor(history[-1][1]), target):
                    break
            if opt.param_groups[0]["lr"] <= 1e-7 * (1 + 1e-9):
                break
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        final = member_losses(None).detach()
    return final, history


def reached(losses: Tensor, target: float) -> bool:
    """Whether the median of the per-member losses (K,) is at or below ``target`` (> 0; 0 never). With an
    even K torch's median is the lower middle: K = 10 students stop once 5 of them, the least a cluster
    needs at gamma = 0.5, are there."""
    return target > 0 and float(losses.median()) <= target


def train(students: Students, x: Tensor, y: Tensor, dtype: torch.dtype = torch.float64, **fit_options) -> Students:
    """Train every student to imitate y (n, d_out) at x (n, d_in); returns the trained students (float64).
    ``dtype``: the arithmetic of the training (float32 runs ~2.4x faster on a CPU; the losses returned and
    recorded are those of that arithmetic)."""
    params = {k: v.to(dtype, copy=True) for k, v in students.params.items()}
    x, y = x.to(dtype), y.to(dtype)
    many = ManyNets(students.template, students.n, tuple(x.shape[1:]), "auto")

    def member_losses(idx: Tensor | None) -> Tensor:
        xb, yb = (x, y) if idx is None else (x[idx], y[idx])
        out = many(params, {}, xb.expand(students.n, *xb.shape))[0]  # (N, B, d_out)
        return ((out - yb) ** 2).mean(dim=(1, 2))  # per-student MSE
    losses, history = fit(list(params.values()), member_losses, len(x), **fit_options)
    params = {k: v.double() for k, v in params.items()}
    return Students(students.template, params, losses.double(), students.history + history)
