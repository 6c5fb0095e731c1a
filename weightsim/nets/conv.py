"""Conv task nets of the paper: PlainNet-k (conv units conv -> act -> BN -> pool, then one FC) and
ResNet-5 (PlainNet-5 with identity shortcuts, the same weight shapes)."""

from __future__ import annotations

from torch import Tensor, nn

from weightsim.errors import ConfigError
from weightsim.nets.spec import activation as make_activation

NORMS = ("bn", "none")


class Unit(nn.Module):
    """y = body(x), a plain unit. Wrapping units (plain and residual alike) gives PlainNet and
    ResNet the same parameter names (``<i>.body.<j>.weight``) as well as the same shapes."""

    chain_order = ("body",)  # the chain walk descends into these children, in forward order
    elementwise_composition = True  # forward composes children with element-wise ops (zoo/stacked.py)

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Residual(Unit):
    """y = x + body(x): an identity shortcut. The chain walks ``body`` only (the shortcut has no
    weights); the shortcut ties the hidden permutation of body's output to that of its input."""

    chain_shortcut = True  # the output mixes body's output with the input (the chain walk's BN rule)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _widths(channels: int | list[int], units: int) -> list[int]:
    w = [channels] * units if isinstance(channels, int) else list(channels)
    if len(w) != units or min(w) < 1:
        raise ConfigError(f"arch.channels={channels} does not give {units} conv widths")
    return w


def _pools(pool: str | list[bool], size: int, units: int) -> list[bool]:
    """auto: pool after a unit while the map is at least 4 pixels wide (32 -> 16 -> 8 -> 4 -> 2;
    8 -> 4 -> 2), so small inputs (digits 8x8) still work."""
    if pool == "auto":
        out = []
        for _ in range(units):
            out.append(size >= 4)
            size = size // 2 if size >= 4 else size
        return out
    if not isinstance(pool, (list, tuple)) or len(pool) != units:
        raise ConfigError(f"arch.pool={pool}: use 'auto' or a list of {units} booleans")
    return [bool(p) for p in pool]


def batchnorm(channels: int, dims: int = 2) -> nn.Module:
    """BatchNorm{1,2}d without the ``num_batches_tracked`` step counter: with a fixed momentum torch
    never reads it, and a 0-d integer buffer is no weight of the zoo (stacked it is (K,), which
    per-member code that flattens (K, ...) tensors does not expect)."""
    bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels)
    bn.register_buffer("num_batches_tracked", None)
    return bn


def _unit(c_in: int, c_out: int, kernel: int, act: str, norm: str) -> list[nn.Module]:
    """conv -> activation -> BN (the paper's unit order), without the pool."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), make_activation(act)]
    if norm == "bn":
        layers.append(batchnorm(c_out))
    return layers


def _check(input_shape: tuple[int, ...], norm: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(f"conv archs need C x H x W inputs, got input_shape={tuple(input_shape)} "
                          f"(digits: dataset.image=true)")
    if norm not in NORMS:
        raise ConfigError(f"arch.norm='{norm}': choose from {', '.join(NORMS)}")
    return tuple(input_shape)  # type: ignore[return-value]


class PlainNet(nn.Sequential):
    """PlainNet-(units+1): ``units`` conv units (conv k x k -> act -> BN -> 2x2 max-pool), then one FC.

    input (N, C, H, W) -> logits (N, num_classes). ``units=4``: PlainNet-5, ``units=5``: PlainNet-6.
    """

    residual = False  # identity shortcuts around units 2..units (ResNet)

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, units: int = 4,
                 channels: int | list[int] = 16, kernel: int = 3, activation: str = "relu",
                 norm: str = "bn", pool: str | list[bool] = "auto"):
        super().__init__(*conv_stack(input_shape, num_classes, units, channels, kernel, activation, norm, pool,
                                     residual=self.residual))
        self.input_shape = tuple(input_shape)


class ResNet(PlainNet):
    """ResNet-(units+1): PlainNet with identity shortcuts around units 2..units:
    x <- pool(x + BN(act(conv(x)))). Same parameter names and shapes as ``PlainNet`` with
    equal widths, so cross-network evaluation works chain by chain."""

    residual = True


def conv_stack(input_shape: tuple[int, ...], num_classes: int, units: int, channels: int | list[int],
               kernel: int, activation: str, norm: str, pool: str | list[bool], residual: bool) -> list[nn.Module]:
    """The layers of PlainNet (residual=False) or ResNet (identity shortcuts around units 2..units):
    units of conv -> act -> BN, 2x2 max-pool after the units ``pool`` selects, then Flatten -> Linear."""
    c, h, w = _check(input_shape, norm)
    widths, pools = _widths(channels, units), _pools(pool, min(h, w), units)
    if residual and (len(set(widths[1:])) > 1 or (units > 1 and widths[0] != widths[1])):
        raise ConfigError(f"arch.channels={channels}: identity shortcuts need equal widths after unit 1")
    layers: list[nn.Module] = []
    for i, (c_out, p) in enumerate(zip(widths, pools)):
        body = nn.Sequential(*_unit(c, c_out, kernel, activation, norm))
        layers.append(Residual(body) if residual and i > 0 else Unit(body))
        if p:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = c_out
    return layers + [nn.Flatten(), nn.Linear(c * h * w, num_classes)]
