"""A user's template net stored as data: an ``nn.Sequential`` tree of plain ``torch.nn`` layers
described by their constructor arguments, so an imported zoo's zoo.json rebuilds it without running
any code of the user's (``build_net`` allows only ``weightsim.nets`` builders).

    spec = sequential_spec(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3)))
    net = Sequential(spec)          # the same modules, names and parameter shapes, fresh weights
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from weightsim.errors import ConfigError

# layer type -> the constructor arguments read off an instance (attribute name = argument name)
LAYERS: dict[str, tuple[str, ...]] = {
    "Linear": ("in_features", "out_features", "bias"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias"),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "ReLU": (), "Tanh": (), "Sigmoid": (), "GELU": (), "ELU": ("alpha",), "Identity": (),
    "LeakyReLU": ("negative_slope",),
    "Flatten": ("start_dim", "end_dim"),
    "Dropout": ("p",),
    "MaxPool2d": ("kernel_size", "stride", "padding"),
    "AvgPool2d": ("kernel_size", "stride", "padding"),
    "AdaptiveAvgPool2d": ("output_size",),
}


def _arg(m: nn.Module, name: str):
    v = getattr(m, name)
    if name == "bias" and not isinstance(v, bool):  # Linear / Conv2d hold the tensor (or None)
        return v is not None
    return list(v) if isinstance(v, tuple) else v


def sequential_spec(module: nn.Module, name: str = "") -> dict:
    """The JSON-able description of ``module``: {"type": "Sequential", "children": [[name, spec], ...]}
    for an ``nn.Sequential``, {"type": <layer>, "args": {...}} for a layer of ``LAYERS``. Anything else
    is a ConfigError naming the module."""
    kind = type(module)
    if isinstance(module, nn.Sequential) and kind.forward is nn.Sequential.forward:  # e.g. weightsim's MLP
        return {"type": "Sequential", "children": [[n, sequential_spec(c, f"{name}.{n}" if name else n)]
                                                   for n, c in module.named_children()]}
    if kind.__module__.startswith("torch.nn") and kind.__name__ in LAYERS:
        return {"type": kind.__name__, "args": {a: _arg(module, a) for a in LAYERS[kind.__name__]}}
    raise ConfigError(f"template module '{name or '<root>'}' ({kind.__name__}) cannot be stored in a zoo: a template "
                      f"must be an nn.Sequential of torch.nn layers ({', '.join(LAYERS)}); for another net pass "
                      f"arch=<a weightsim arch> with its overrides instead")


def _build(spec: dict) -> nn.Module:
    kind = spec.get("type")
    if kind == "Sequential":
        return nn.Sequential(OrderedDict((str(n), _build(c)) for n, c in spec.get("children", [])))
    if kind not in LAYERS:
        raise ConfigError(f"zoo arch spec names layer type {kind!r}: not one of Sequential, {', '.join(LAYERS)}")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in (spec.get("args") or {}).items()}
    return getattr(nn, kind)(**args)


def Sequential(spec: dict, input_shape: tuple[int, ...] = (), num_classes: int | None = None) -> nn.Module:
    """Rebuild the net ``spec`` describes (``sequential_spec``); input_shape and num_classes are the
    zoo's (every builder takes them) and are only recorded: the spec fixes every size."""
    net = _build(spec)
    net.input_shape = tuple(input_shape)
    return net
