"""Teachers for Expand-and-Cluster: synthetic MLPs with controlled neurons, or any MLP of a zoo.

A teacher is an ``nn.Sequential`` of Linear layers with one element-wise activation between them
(a leading Flatten is allowed). ``layers(net)`` checks that shape and returns the Linear layers and
the activation's name; anything else is a ConfigError naming the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from weightsim.errors import ConfigError
from weightsim.nets import spec
from weightsim.nets.mlp import linear_stack
from weightsim.nets.spec import Activation

# the activations Expand-and-Cluster covers: those of the registry with a sign symmetry (docs/recover.md)
ACTIVATIONS: dict[str, Activation] = {n: a for n, a in spec.ACTIVATIONS.items() if a.sign_class is not None}


def activation_module(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation '{name}' is not covered by Expand-and-Cluster: choose from "
                          f"{', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name].build()


def sign_class(name: str) -> str:
    """Expand-and-Cluster's symmetry class of a covered activation: "odd", "relu" or "even_linear"."""
    return ACTIVATIONS[name].sign_class


def activation_name(module: nn.Module) -> str | None:
    return spec.activation_name(module, ACTIVATIONS)


def layers(net: nn.Module) -> tuple[list[nn.Linear], str]:
    """The Linear layers of an MLP teacher ``net`` and its activation's name.

    ``net``: nn.Sequential of [Flatten,] Linear, act, Linear, act, ..., Linear, one activation kind."""
    mods = list(net.children()) if isinstance(net, nn.Sequential) else [net]
    if mods and isinstance(mods[0], nn.Flatten):
        mods = mods[1:]
    what = f"a {type(net).__name__}"
    acts = {activation_name(m) for m in mods[1::2]}
    for i, m in enumerate(mods):
        want_linear = i % 2 == 0
        ok = isinstance(m, nn.Linear) if want_linear else activation_name(m) is not None
        if not ok:
            raise ConfigError(
                f"teacher layer {i} ({type(m).__name__}) of {what} is not covered by Expand-and-Cluster: "
                f"it takes an nn.Sequential of Linear layers with one activation between them "
                f"({', '.join(ACTIVATIONS)}); use an MLP teacher (e.g. a zoo of arch=mlp with arch.activation="
                f"relu or tanh)")
    if len(mods) < 3 or len(mods) % 2 == 0:
        raise ConfigError(f"teacher {what} has no hidden layer ending in a Linear output: Expand-and-Cluster "
                          f"needs Linear, act, ..., Linear")
    if len(acts) != 1:
        raise ConfigError(f"teacher mixes activations {sorted(acts)}: Expand-and-Cluster needs one kind")
    return mods[0::2], acts.pop()


def synthetic_teacher(d_in: int, widths: list[int], activation: str = "tanh", seed: int = 0, d_out: int = 1,
                      norm: tuple[float, float] = (1.5, 2.5), out: tuple[float, float] = (0.5, 1.5),
                      max_cos: float = 0.8) -> nn.Sequential:
    """A teacher d_in-widths-d_out (float64) with identifiable neurons.

    Hidden neuron i of a layer: incoming w_i = u_i * s_i with u_i a uniform unit direction,
    s_i ~ U[norm], bias b_i ~ U[-s_i, s_i]; pairs with |cos(u_i, u_j)| >= max_cos are redrawn (near
    parallel neurons are not identifiable). Weights into the next layer and the output: random
    sign times U[out]; output bias 0.
    """
    if not widths or min(widths) < 1 or d_in < 1:
        raise ConfigError(f"teacher widths={widths}, d_in={d_in}: need at least one hidden layer of width >= 1")
    g = torch.Generator().manual_seed(seed)
    def uni(n: int, lo_hi: tuple[float, float]) -> Tensor:  # U[lo, hi]
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * torch.rand(n, generator=g, dtype=torch.float64)
    sizes = [d_in, *widths]
    net = nn.Sequential(*linear_stack([*sizes, d_out], lambda: activation_module(activation))).double()
    lins = list(net)[0::2]
    for lin, fan_in, width in zip(lins, sizes[:-1], sizes[1:]):
        u = torch.zeros(width, fan_in, dtype=torch.float64)
        for i in range(width):
            for _ in range(1000):
                v = torch.randn(fan_in, generator=g, dtype=torch.float64)
                v = v / v.norm()
                if i == 0 or (u[:i] @ v).abs().max() < max_cos:
                    break
            else:
                raise ConfigError(f"cannot draw {width} directions in {fan_in} dimensions with |cos| < {max_cos}: "
                                  f"use a narrower layer")
            u[i] = v
        s = uni(width, norm)
        with torch.no_grad():
            lin.weight.copy_(u * s[:, None])
            lin.bias.copy_((2 * torch.rand(width, generator=g, dtype=torch.float64) - 1) * s)  # b ~ U[-s, s]
    last = lins[-1]
    with torch.no_grad():
        sign = torch.where(torch.rand(d_out, sizes[-1], generator=g) < 0.5, -1.0, 1.0).double()
        last.weight.copy_(sign * uni(d_out * sizes[-1], out).view(d_out, -1))
        last.bias.zero_()
    return net


@dataclass
class Problem:
    """A teacher and the probe inputs x (n, d_in) its input-output map is sampled at. x is None when
    the probe count is left to the caller: then ``draw(n)`` returns n probe inputs."""

    teacher: nn.Sequential
    x: Tensor | None
    name: str
    draw: Callable[[int], Tensor] | None = None

    def probes(self, n: int) -> Tensor:
        """The fixed probe inputs, or n fresh draws when there are none."""
        return self.x if self.x is not None else self.draw(n)


def gaussian_problem(d_in: int = 20, widths: tuple[int, ...] = (8,), activation: str = "tanh", seed: int = 0,
                     n: int | None = None, d_out: int = 1) -> Problem:
    """A synthetic teacher probed at n inputs x ~ N(0, I) (seed + 1 draws them); n None: x is drawn
    later by ``Problem.probes(n)`` (Expand-and-Cluster sizes n to its students, ec.probe_count)."""
    widths = list(widths)
    teacher = synthetic_teacher(d_in, widths, activation, seed, d_out)

    def draw(k: int) -> Tensor:
        return torch.randn(k, d_in, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return Problem(teacher, None if n is None else draw(n), f"{activation} {'-'.join(map(str, [d_in, *widths, d_out]))} "
                   f"seed {seed}", draw)


def zoo_problem(zoo_dir: str, task: int = 0, seed: int = 0, data_dir: str | None = None) -> Problem:
    """Net (task, seed) of a zoo as teacher (float64), probed at every input of the zoo's dataset pool."""
    from weightsim.errors import ZooError
    from weightsim.zoo.view import Zoo

    zoo = Zoo(zoo_dir)
    rows = zoo.select(task=task)
    row = next((r for r in rows if r["seed"] == seed), None)
    if row is None:
        have = sorted({(r["task"], r["seed"]) for r in zoo.rows})
        raise ZooError(f"zoo {zoo_dir} has no net task={task} seed={seed}: it has (task, seed) {have[:8]}"
                       f"{' ...' if len(have) > 8 else ''}; set teacher.task= and teacher.seed=")
    net = zoo.net(row).double()
    layers(net)  # fail before loading data when E&C does not cover the net
    x = zoo.taskset(data_dir).x.double().flatten(1)
    return Problem(net, x, f"zoo {zoo.head['arch'].get('name')} task {task} seed {seed}")


def widths_of(net: nn.Sequential) -> list[int]:
    """Hidden widths of an MLP teacher."""
    return [lin.out_features for lin in layers(net)[0][:-1]]
