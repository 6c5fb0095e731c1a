"""Per-chain features of the nets of a zoo: normalized (chain Grams) or raw (flattened layers)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from weightsim.chains import ChainOptions, describe_chains, zoo_chain_features, zoo_raw_features
from weightsim.nets.build import build_net
from weightsim.zoo.store import ZooReader

__all__ = ["ChainOptions", "zoo_template", "zoo_features", "describe_zoo_chains"]


def zoo_template(reader: ZooReader) -> nn.Module:
    """The zoo's architecture, rebuilt from its header (only weightsim.nets builders)."""
    h = reader.head
    return build_net(h["arch"]["config"], h["input_shape"], h["num_classes"])


def zoo_features(reader: ZooReader, rows: list[dict], normalized: bool, opts: ChainOptions) -> list[Tensor]:
    """Per chain (normalized) or per layer (raw), an (N, D) float tensor for ``rows``.

    Normalized features stream from disk: ``opts.batch_size`` nets are loaded, featurized (vmap)
    and dropped at a time, so only the (exact or sketched) features of the zoo are held.
    """
    template = zoo_template(reader)
    if not normalized:
        return zoo_raw_features(template, reader.load(rows))
    parts = [zoo_chain_features(template, reader.load(rows[s:s + opts.batch_size]), opts)
             for s in range(0, len(rows), opts.batch_size)]
    return [torch.cat([p[c] for p in parts]) for c in range(len(parts[0]))]


def describe_zoo_chains(reader: ZooReader, opts: ChainOptions) -> list[dict]:
    """Per chain: remedy used (exact / sketch), exact rows d_l, feature dimension and options."""
    return describe_chains(zoo_template(reader), opts)
