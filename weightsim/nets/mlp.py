"""Fully connected task net: Flatten -> (Linear -> act) x (depth-1) -> Linear."""

from __future__ import annotations

import math

from torch import nn

from weightsim.errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown arch.activation '{name}': choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """``depth`` linear layers; hidden widths ``hidden`` (an int for all, or a list of depth-1)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int | list[int] = 32,
                 depth: int = 4, activation: str = "relu", bias: bool = True):
        widths = [hidden] * (depth - 1) if isinstance(hidden, int) else list(hidden)
        if len(widths) != depth - 1 or depth < 1:
            raise ConfigError(f"arch.hidden={hidden} does not give depth-1={depth - 1} hidden widths")
        sizes = [math.prod(input_shape), *widths, num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(sizes) - 2:
                layers.append(globals()["activation"](activation))
        super().__init__(*layers)
        self.input_shape = tuple(input_shape)
