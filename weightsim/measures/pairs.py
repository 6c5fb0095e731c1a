"""Distance measures computed pair by pair (``PairMeasure``), each pair of nets once, so that the
repeated seed splits of HTT and the pairwise summaries of ``weightsim-compare`` read the same values."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from torch import Tensor

from weightsim.measures.base import DistanceMeasure
from weightsim.zoo.view import Zoo

Key = tuple[str, int, int]  # (zoo root, task, seed): one net


def net_key(zoo: Zoo, row: dict) -> Key:
    return str(zoo.root), int(row["task"]), int(row["seed"])


class PairMeasure(DistanceMeasure):
    """A distance measure computed pair by pair, each pair once: ``pair(zoo_a, row_a, zoo_b, row_b)``
    gives the pair's per-layer values, ``distance`` turns them into per-layer distances. A symmetric
    measure computes (A, B) or (B, A), whichever is asked first, and reads it for the other order
    (weight matching from either side can end in different local optima; this keeps one)."""

    symmetric = True

    def __init__(self, settings=None, context=None):
        super().__init__(settings, context)
        self.values: dict[tuple[Key, Key, bool], np.ndarray] = {}

    @abstractmethod
    def pair(self, zoo_a: Zoo, row_a: dict, zoo_b: Zoo, row_b: dict, shuffled: bool = False) -> np.ndarray:
        """The pair's values, one row per layer (L, ...)."""

    def distance(self, values: np.ndarray) -> np.ndarray:
        """(L,) distances from a pair's values (default: the values are distances)."""
        return values

    def prepare(self, zoo: Zoo, rows: list[dict], shuffled: bool = False) -> None:
        """Load or compute what ``pair`` needs for the nets ``rows`` at once (default: nothing)."""

    def value(self, zoo_a: Zoo, row_a: dict, zoo_b: Zoo, row_b: dict, shuffled: bool = False) -> np.ndarray:
        ka, kb = net_key(zoo_a, row_a), net_key(zoo_b, row_b)
        if (ka, kb, shuffled) not in self.values:
            if self.symmetric and not shuffled and (kb, ka, False) in self.values:
                return self.values[(kb, ka, False)]
            self.values[(ka, kb, shuffled)] = self.pair(zoo_a, row_a, zoo_b, row_b, shuffled)
        return self.values[(ka, kb, shuffled)]

    def distances(self, zoo_a: Zoo, rows_a: list[dict], zoo_b: Zoo, rows_b: list[dict]) -> list[Tensor]:
        self.prepare(zoo_a, rows_a)
        self.prepare(zoo_b, rows_b)
        n_layers = len(self.chain_keys(zoo_a))
        out = torch.zeros(n_layers, len(rows_a), len(rows_b), dtype=torch.float64)
        for i, ra in enumerate(rows_a):
            for j, rb in enumerate(rows_b):
                if net_key(zoo_a, ra) != net_key(zoo_b, rb):  # a net is at distance 0 of itself
                    out[:, i, j] = torch.from_numpy(self.distance(self.value(zoo_a, ra, zoo_b, rb)))
        return list(out)
