"""What a measure is: per chain of a net, features (``Measure``) or net x net distances
(``DistanceMeasure``). HTT (htt/run.py) and weightsim-compare (compare/run.py) test every measure the
same way; a measure is built from its own settings (a dataclass, the Hydra group ``measure/<name>``)
and the run-wide ``MeasureContext`` (the chain options and the protocol's metric), and keeps them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from weightsim.chains.options import ChainOptions
from weightsim.errors import ConfigError
from weightsim.zoo.view import Zoo

METRICS = ("euclidean", "cosine")


def pairwise_distances(a: Tensor, b: Tensor, metric: str) -> Tensor:
    """(Q, D), (G, D) -> (Q, G) distances between representations: euclidean or cosine (1 - cos)."""
    if metric == "euclidean":
        return torch.cdist(a, b)
    if metric == "cosine":
        a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
        return 1 - a @ b.T
    raise ConfigError(f"unknown protocol.metric '{metric}': choose {' or '.join(METRICS)}")


@dataclass
class NoSettings:
    """The settings of a measure that has none of its own."""


@dataclass
class MeasureContext:
    """The run-wide settings a measure may read besides its own: the chain options (the ``chains``
    group) and the distance between representations (``protocol.metric``)."""

    chains: ChainOptions = field(default_factory=ChainOptions)
    metric: str = "euclidean"


class Measure(ABC):
    """Per-chain features of a zoo's nets. ``name`` is the report's ``measure`` column; ``Settings``
    the dataclass of its own settings (``self.settings``), ``self.context`` the run-wide ones."""

    name: str = ""
    Settings: type = NoSettings
    gram_dtype: torch.dtype = torch.float64  # precision of the standardized features' Grams (htt/gram.py)

    def __init__(self, settings: Any = None, context: MeasureContext | None = None):
        self.settings = settings if settings is not None else self.Settings()
        self.context = context or MeasureContext()

    @abstractmethod
    def chain_keys(self, zoo: Zoo) -> list[tuple]:
        """Per chain (1-based order), a (key, feature size) pair read off the architecture
        without loading nets: chains with equal keys are the same chain in two zoos."""

    @abstractmethod
    def features(self, zoo: Zoo, rows: list[dict]) -> list[Tensor]:
        """Per chain, an (N, D_c) float tensor of the nets ``rows``."""

    def features_from(self, zoo: Zoo, rows: list[dict], stacked: dict[str, Tensor]) -> list[Tensor]:
        """``features`` of nets whose weights are already read: stacked is name -> (N, *shape) on the
        device HTT runs on (HTT reads each block of nets once for every measure). Default: ``features``,
        which reads them again."""
        return self.features(zoo, rows)

    @abstractmethod
    def describe(self, zoo: Zoo) -> dict:
        """What the features are, for run.json and report.md."""

    def announce(self, zoo: Zoo, chains: list[int]) -> None:
        """Warn about anything in ``chains`` that the user did not ask for (default: nothing)."""


class DistanceMeasure(Measure):
    """A measure that gives net x net distances per chain instead of features (activation CKA,
    subspace match, aligned weight distance). HTT tests it without a weight classifier: k-nearest-
    neighbour classification of the test nets among the training nets (``protocol.knn``), retrieval
    on the unseen nets' distances, the same nulls, bound and effect size (htt/protocols.py)."""

    def features(self, zoo: Zoo, rows: list[dict]) -> list[Tensor]:
        raise TypeError(f"measure '{self.name}' gives distances, not features")

    @abstractmethod
    def distances(self, zoo_a: Zoo, rows_a: list[dict], zoo_b: Zoo, rows_b: list[dict]) -> list[Tensor]:
        """Per chain, the (len(rows_a), len(rows_b)) distances between the nets rows_a of zoo_a and
        the nets rows_b of zoo_b."""
