"""ResNet-MLP-12 (paper Appendix D): residual blocks of two Linear -> act -> BN layers."""

from __future__ import annotations

import math

from torch import nn

from weightsim.errors import ConfigError
from weightsim.nets.conv import NORMS, Residual, Unit, batchnorm
from weightsim.nets.spec import activation as make_activation


def _layer(a: int, b: int, act: str, norm: str) -> list[nn.Module]:
    out: list[nn.Module] = [nn.Linear(a, b), make_activation(act)]
    if norm == "bn":
        out.append(batchnorm(b, dims=1))
    return out


class ResNetMLP(nn.Sequential):
    """Flatten -> stem (Linear d->w, act, BN) -> ``blocks`` residual blocks
    x <- x + BN(act(L2(BN(act(L1(x)))))) with L1, L2: w -> w -> head Linear(w, num_classes).

    The paper's "12" counts the 2 x 6 residual layers; the stem and the head bring the chain count
    to 2 * blocks + 2 (14 by default). input (N, *input_shape) -> logits (N, num_classes).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 32, blocks: int = 6,
                 activation: str = "relu", norm: str = "bn"):
        if norm not in NORMS:
            raise ConfigError(f"arch.norm='{norm}': choose from {', '.join(NORMS)}")
        if blocks < 1 or width < 1:
            raise ConfigError(f"arch.blocks={blocks} and arch.width={width} must be >= 1")
        layers: list[nn.Module] = [nn.Flatten(), Unit(nn.Sequential(*_layer(math.prod(input_shape), width,
                                                                               activation, norm)))]
        for _ in range(blocks):
            layers.append(Residual(nn.Sequential(*_layer(width, width, activation, norm),
                                                 *_layer(width, width, activation, norm))))
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        self.input_shape = tuple(input_shape)
