"""Measures: what HTT tests. A measure turns each net of a zoo into per-chain features; the weight
classifier and both protocols then run on them the same way for every measure.

A new measure is one class with the four methods of ``Measure`` and one entry in ``MEASURES``
(report rows carry its name in ``measure``). A measure that only yields net x net distances
(activation CKA, subspace match) is tested with the distance forms in htt/protocols.py
(``knn_classify``, ``cmc_curve``, ``retrieval_null``, ``effect_size``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from weightsim.chains import ChainOptions, describe_chains, zoo_chain_features, zoo_raw_features
from weightsim.chains.core import chain_layers
from weightsim.chains.options import sketch_note
from weightsim.errors import ConfigError, warn
from weightsim.zoo.view import Zoo


class Measure(ABC):
    """Per-chain features of a zoo's nets. ``name`` is the report's ``measure`` column."""

    name: str = ""
    gram_dtype: torch.dtype = torch.float64  # precision of the standardized features' Grams (htt/gram.py)

    @abstractmethod
    def chain_keys(self, zoo: Zoo, opts: ChainOptions) -> list[tuple]:
        """Per chain (1-based order), a (key, feature size) pair read off the architecture
        without loading nets: chains with equal keys are the same chain in two zoos."""

    @abstractmethod
    def features(self, zoo: Zoo, rows: list[dict], opts: ChainOptions) -> list[Tensor]:
        """Per chain, an (N, D_c) float tensor of the nets ``rows``."""

    def features_from(self, zoo: Zoo, rows: list[dict], stacked: dict[str, Tensor], opts: ChainOptions) -> list[Tensor]:
        """``features`` of nets whose weights are already read: stacked is name -> (N, *shape) on the
        device HTT runs on (HTT reads each block of nets once for every measure). Default: ``features``,
        which reads them again."""
        return self.features(zoo, rows, opts)

    @abstractmethod
    def describe(self, zoo: Zoo, opts: ChainOptions) -> dict:
        """What the features are, for run.json and report.md."""

    def announce(self, zoo: Zoo, opts: ChainOptions, chains: list[int]) -> None:
        """Warn about anything in ``chains`` that the user did not ask for (default: nothing)."""


class ChainGram(Measure):
    """Chain normalization: per chain l, the upper triangle of G_l = C_l C_l^T (exact, or of the
    sketched S C_l), with the chain options (docs/chains.md)."""

    name = "chain_gram"

    def chain_keys(self, zoo: Zoo, opts: ChainOptions) -> list[tuple]:
        # the exact row count d_l pairs chains: a sketched FC chain never meets a sketched conv chain
        return [((p["rows_exact"], p["feature_dim"]), p["feature_dim"]) for p in self.plan(zoo, opts)]

    def plan(self, zoo: Zoo, opts: ChainOptions) -> list[dict]:
        return describe_chains(zoo.template, opts)

    def features(self, zoo: Zoo, rows: list[dict], opts: ChainOptions) -> list[Tensor]:
        # streamed: opts.batch_size nets are loaded, featurized (vmap) and dropped at a time
        parts = [self.features_from(zoo, rows[s:s + opts.batch_size], zoo.stacked(rows[s:s + opts.batch_size]), opts)
                 for s in range(0, len(rows), opts.batch_size)]
        return [torch.cat([p[c] for p in parts]) for c in range(len(parts[0]))]

    def features_from(self, zoo: Zoo, rows: list[dict], stacked: dict[str, Tensor], opts: ChainOptions) -> list[Tensor]:
        return zoo_chain_features(zoo.template, stacked, opts)  # on stacked's device

    def describe(self, zoo: Zoo, opts: ChainOptions) -> dict:
        text = ("Gram G_l = C_l C_l^T of chain l (exact, or of the sketched S C_l), upper triangle"
                + (" (homogeneous bias)" if opts.bias else "")
                + {"fro": ", divided by ||G_l||_F", "unit": ", unit columns of C_l"}.get(opts.scale, ""))
        batchnorm = {"invariant": "BN-absorbed channel scale removed (unit columns), gamma folded in",
                     "fold": "folded into the next weight layer (eval statistics)",
                     "ignore": "ignored by the chain (as in the paper)"}[opts.bn]
        return {"features": text, "batchnorm": batchnorm, "options": opts.as_dict(),
                "chains": self.plan(zoo, opts)}

    def announce(self, zoo: Zoo, opts: ChainOptions, chains: list[int]) -> None:
        note = sketch_note([p for p in self.plan(zoo, opts) if p["chain"] in chains], opts)
        if note:
            warn(note)


class RawLayers(Measure):
    """The unnormalized baseline: layer l's weight tensor(s) flattened."""

    name = "raw"
    # D reaches 10^6 per layer, so its Gram is HTT's largest cost: float32 keeps the classifier's
    # result (tests/test_htt_gram.py::test_raw_in_float32_keeps_the_results)
    gram_dtype = torch.float32

    def chain_keys(self, zoo: Zoo, opts: ChainOptions) -> list[tuple]:
        template = zoo.template
        sizes = {k: v.numel() for k, v in template.state_dict().items()}
        return [(n, n) for n in (sum(sizes[p] for p in layer.raw) for layer in chain_layers(template))]

    def features(self, zoo: Zoo, rows: list[dict], opts: ChainOptions) -> list[Tensor]:
        return zoo_raw_features(zoo.template, zoo.stacked(rows))

    def features_from(self, zoo: Zoo, rows: list[dict], stacked: dict[str, Tensor], opts: ChainOptions) -> list[Tensor]:
        return zoo_raw_features(zoo.template, stacked)

    def describe(self, zoo: Zoo, opts: ChainOptions) -> dict:
        return {"features": "layer l's weight(s) flattened"}


class GivenFeatures(Measure):
    """Features given per chain instead of nets (``weightsim.htt.test(features, tasks)``): the zoo's
    "nets" are ``weightsim.nets.features.Features`` holders, chain c's features their ``chain<c>``."""

    name = "features"

    def dims(self, zoo: Zoo) -> list[int]:
        from weightsim.nets.features import Features

        if not isinstance(zoo.template, Features):
            raise ConfigError(f"measure 'features' reads features given to weightsim.htt.test; zoo {zoo.root} holds "
                              f"nets (arch '{zoo.head['arch'].get('name')}'): use chain_gram or raw")
        return zoo.template.dims

    def chain_keys(self, zoo: Zoo, opts: ChainOptions) -> list[tuple]:
        return [((f"chain{c}", d), d) for c, d in enumerate(self.dims(zoo), 1)]

    def features(self, zoo: Zoo, rows: list[dict], opts: ChainOptions) -> list[Tensor]:
        return self.features_from(zoo, rows, zoo.stacked(rows), opts)

    def features_from(self, zoo: Zoo, rows: list[dict], stacked: dict[str, Tensor], opts: ChainOptions) -> list[Tensor]:
        return [stacked[f"chain{c}"] for c in range(1, len(self.dims(zoo)) + 1)]

    def describe(self, zoo: Zoo, opts: ChainOptions) -> dict:
        return {"features": "given per chain (weightsim.htt.test on features)", "dims": self.dims(zoo)}


class DistanceMeasure(Measure):
    """A measure that gives net x net distances per chain instead of features (activation CKA,
    subspace match, aligned weight distance). HTT tests it without a weight classifier: k-nearest-
    neighbour classification of the test nets among the training nets (``protocol.knn``), retrieval
    on the unseen nets' distances, the same nulls, bound and effect size (htt/protocols.py)."""

    def features(self, zoo: Zoo, rows: list[dict], opts: ChainOptions) -> list[Tensor]:
        raise TypeError(f"measure '{self.name}' gives distances, not features")

    @abstractmethod
    def distances(self, zoo_a: Zoo, rows_a: list[dict], zoo_b: Zoo, rows_b: list[dict],
                  opts: ChainOptions) -> list[Tensor]:
        """Per chain, the (len(rows_a), len(rows_b)) distances between the nets rows_a of zoo_a and
        the nets rows_b of zoo_b."""


MEASURES: dict[str, Measure] = {m.name: m for m in (ChainGram(), RawLayers(), GivenFeatures())}


def get_measure(name: str) -> Measure:
    """The registered measure ``name``, or a new compare measure (weightsim/compare/measures.py:
    cka, match, weight_matching, chain_gram_distance) with its default settings; an unknown one is an
    error that lists the choices."""
    from weightsim.compare.measures import COMPARE_MEASURES  # they build on DistanceMeasure: imported late

    if name in MEASURES:
        return MEASURES[name]
    if name in COMPARE_MEASURES:
        return COMPARE_MEASURES[name]()
    raise ConfigError(f"unknown protocol.measures entry '{name}': choose from "
                      f"{', '.join([*MEASURES, *COMPARE_MEASURES])}")
