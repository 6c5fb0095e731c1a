"""Per-chain features of the nets of a zoo: normalized (chain Grams) or raw (flattened layers)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from weightsim.chains import zoo_chain_features, zoo_raw_features
from weightsim.nets.build import build_net
from weightsim.zoo.store import ZooReader


@dataclass
class ChainOptions:
    bias: bool = False  # homogeneous coordinates (DESIGN.md §2, an option, not in the paper)
    batch_size: int = 256  # nets per batch when featurizing a zoo


def zoo_template(reader: ZooReader) -> nn.Module:
    """The zoo's architecture, rebuilt from its header (only weightsim.nets builders)."""
    h = reader.head
    return build_net(h["arch"]["config"], h["input_shape"], h["num_classes"])


def zoo_features(reader: ZooReader, rows: list[dict], normalized: bool, opts: ChainOptions) -> list[Tensor]:
    """Per chain (normalized) or per layer (raw), an (N, D) float tensor for ``rows``."""
    template = zoo_template(reader)
    stacked = reader.load(rows)
    if normalized:
        return zoo_chain_features(template, stacked, bias=opts.bias, batch_size=opts.batch_size)
    return zoo_raw_features(template, stacked)
