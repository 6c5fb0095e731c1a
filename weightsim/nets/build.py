"""Build a task net from an arch config, including the config stored in a zoo's header."""

from __future__ import annotations

from hydra.utils import instantiate
from torch import nn

from weightsim.errors import ZooError


def build_net(arch_cfg: dict, input_shape, num_classes: int) -> nn.Module:
    """Instantiate ``arch_cfg`` (a dict with _target_) for the given input shape and class count.

    Only builders inside ``weightsim.nets`` are allowed, so a zoo header from someone else
    cannot make us import and run arbitrary code.
    """
    target = str(arch_cfg.get("_target_", ""))
    if not target.startswith("weightsim.nets."):
        raise ZooError(f"arch _target_ '{target}' is outside weightsim.nets: refused")
    cfg = {k: v for k, v in arch_cfg.items() if k not in ("_partial_", "name")}
    return instantiate(cfg, input_shape=tuple(input_shape), num_classes=num_classes)
