"""Chain normalization as a measure: per chain l the chain Gram G_l = C_l C_l^T (docs/chains.md),
as features for the weight classifier (``chain_gram``) or as the distance between two nets'
Gram features under ``protocol.metric`` (``chain_gram_distance``, no classifier). Both read the
chain options (the ``chains`` group) from their context."""

from __future__ import annotations

import torch
from torch import Tensor

from weightsim.chains import describe_chains, zoo_chain_features
from weightsim.chains.options import sketch_note
from weightsim.errors import warn
from weightsim.measures.base import DistanceMeasure, Measure, pairwise_distances
from weightsim.zoo.view import Zoo


class ChainGram(Measure):
    """Chain normalization: per chain l, the upper triangle of G_l = C_l C_l^T (exact, or of the
    sketched S C_l), with the context's chain options (docs/chains.md)."""

    name = "chain_gram"

    def chain_keys(self, zoo: Zoo) -> list[tuple]:
        # the exact row count d_l pairs chains: a sketched FC chain never meets a sketched conv chain
        return [((p["rows_exact"], p["feature_dim"]), p["feature_dim"]) for p in self.plan(zoo)]

    def plan(self, zoo: Zoo) -> list[dict]:
        return describe_chains(zoo.template, self.context.chains)

    def features(self, zoo: Zoo, rows: list[dict]) -> list[Tensor]:
        # streamed: chains.batch_size nets are loaded, featurized (vmap) and dropped at a time
        size = self.context.chains.batch_size
        parts = [self.features_from(zoo, rows[s:s + size], zoo.stacked(rows[s:s + size]))
                 for s in range(0, len(rows), size)]
        return [torch.cat([p[c] for p in parts]) for c in range(len(parts[0]))]

    def features_from(self, zoo: Zoo, rows: list[dict], stacked: dict[str, Tensor]) -> list[Tensor]:
        return zoo_chain_features(zoo.template, stacked, self.context.chains)  # on stacked's device

    def describe(self, zoo: Zoo) -> dict:
        opts = self.context.chains
        text = ("Gram G_l = C_l C_l^T of chain l (exact, or of the sketched S C_l), upper triangle"
                + (" (homogeneous bias)" if opts.bias else "")
                + {"fro": ", divided by ||G_l||_F", "unit": ", unit columns of C_l"}.get(opts.scale, ""))
        batchnorm = {"invariant": "BN-absorbed channel scale removed (unit columns), gamma folded in",
                     "fold": "folded into the next weight layer (eval statistics)",
                     "ignore": "ignored by the chain (as in the paper)"}[opts.bn]
        return {"features": text, "batchnorm": batchnorm, "options": opts.as_dict(), "chains": self.plan(zoo)}

    def announce(self, zoo: Zoo, chains: list[int]) -> None:
        note = sketch_note([p for p in self.plan(zoo) if p["chain"] in chains], self.context.chains)
        if note:
            warn(note)


class ChainGramDistance(DistanceMeasure):
    """Per chain, the distance (``protocol.metric``: euclidean or cosine) between two nets' chain Gram
    features, with no classifier."""

    name = "chain_gram_distance"

    def __init__(self, settings=None, context=None):
        super().__init__(settings, context)
        self.gram = ChainGram(context=self.context)

    def chain_keys(self, zoo: Zoo) -> list[tuple]:
        return self.gram.chain_keys(zoo)

    def distances(self, zoo_a: Zoo, rows_a: list[dict], zoo_b: Zoo, rows_b: list[dict]) -> list[Tensor]:
        fa, fb = self.gram.features(zoo_a, rows_a), self.gram.features(zoo_b, rows_b)
        return [pairwise_distances(a.double(), b.double(), self.context.metric) for a, b in zip(fa, fb)]

    def describe(self, zoo: Zoo) -> dict:
        gram = self.gram.describe(zoo)
        return {**gram, "features": f"{self.context.metric.capitalize()} distance between the chain Gram features "
                                    f"({gram['features']})"}
