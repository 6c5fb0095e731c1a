"""Fully connected nets: ``linear_stack`` (Linear -> act -> ... -> Linear), the one MLP builder, and the
task net ``MLP`` (Flatten, then the stack)."""

from __future__ import annotations

import math
import warnings

from torch import nn

from weightsim.errors import ConfigError
from weightsim.nets.spec import activation as arch_activation


def linear_stack(sizes: list[int], act: nn.Module | type[nn.Module] | str, bias: bool = True) -> list[nn.Module]:
    """Linear(sizes[0], sizes[1]), act, ..., Linear(sizes[-2], sizes[-1]): maps (N, sizes[0]) to
    (N, sizes[-1]). ``act``: an arch activation name (``spec.activation``) or a module factory (a class
    or any callable returning a fresh module), called once per hidden layer. Widths of 0 are allowed
    (recover's students with nothing recovered in a layer)."""
    make = (lambda: arch_activation(act)) if isinstance(act, str) else act
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        with warnings.catch_warnings():  # torch warns on the init of a zero-element weight
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            mods.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            mods.append(make())
    return mods


class MLP(nn.Sequential):
    """``depth`` linear layers; hidden widths ``hidden`` (an int for all, or a list of depth-1).
    input (N, *input_shape) -> Flatten -> logits (N, num_classes)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int | list[int] = 32,
                 depth: int = 4, activation: str = "relu", bias: bool = True):
        widths = [hidden] * (depth - 1) if isinstance(hidden, int) else list(hidden)
        if len(widths) != depth - 1 or depth < 1:
            raise ConfigError(f"arch.hidden={hidden} does not give depth-1={depth - 1} hidden widths")
        arch_activation(activation)  # an unknown name fails here, also for depth 1 (no hidden layer)
        super().__init__(nn.Flatten(), *linear_stack([math.prod(input_shape), *widths, num_classes], activation, bias))
        self.input_shape = tuple(input_shape)
