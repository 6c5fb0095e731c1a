"""The compare measures as HTT distance measures: net x net distances per layer that the HTT protocols
(k-NN classification, retrieval / CMC, nulls, effect size) rank by, like the chain Grams.

- ``cka``: per layer (hidden layers, then the logits), 1 - linear CKA of the two nets' activations
  on one probe batch;
- ``match``: per layer, 1 - s(eps), the neuron activation subspace match similarity at one eps;
- ``weight_matching``: per chain layer, ||theta_A - pi(theta_B)||_2 over that layer's tensors after
  one weight matching of the whole nets;
- ``chain_gram_distance``: per chain, the Euclidean distance between the chain Gram features
  (the chain options apply), with no classifier.

Each distance of a pair of nets is computed once and kept (``PairMeasure``), so the repeated seed
splits of HTT and the pairwise summaries of ``weightsim-compare`` read the same values. The
activation measures also give the value with net B's probe inputs in a shuffled order
(``shuffled=True``), the null of an activation comparison: nothing in common but the marginals.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from torch import Tensor, nn

from weightsim.chains import ChainOptions
from weightsim.chains.core import chain_layers
from weightsim.compare.activations import layer_names, probe_inputs, zoo_activations
from weightsim.compare.align import probe_batch, weight_matching
from weightsim.compare.cka import linear_cka
from weightsim.compare.subspace import GRID, match_curve
from weightsim.errors import ConfigError, DataError
from weightsim.htt.measures import ChainGram, DistanceMeasure
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

    def __init__(self):
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

    def distances(self, zoo_a: Zoo, rows_a: list[dict], zoo_b: Zoo, rows_b: list[dict],
                  opts: ChainOptions) -> list[Tensor]:
        self.prepare(zoo_a, rows_a)
        self.prepare(zoo_b, rows_b)
        n_layers = len(self.chain_keys(zoo_a, opts))
        out = torch.zeros(n_layers, len(rows_a), len(rows_b), dtype=torch.float64)
        for i, ra in enumerate(rows_a):
            for j, rb in enumerate(rows_b):
                if net_key(zoo_a, ra) != net_key(zoo_b, rb):  # a net is at distance 0 of itself
                    out[:, i, j] = torch.from_numpy(self.distance(self.value(zoo_a, ra, zoo_b, rb)))
        return list(out)


class ActivationMeasure(PairMeasure):
    """A measure of two nets' activations on one probe batch: ``probe`` inputs of the zoo's tasks
    (test inputs, seeded order), layers as ``layer_names(where)``, computed in blocks of nets within
    ``budget_mb`` and kept per net."""

    def __init__(self, probe: int = 256, probe_seed: int = 0, data_dir: str | None = None, where: str = "post",
                 budget_mb: float = 256.0, layers: list[str] | None = None):
        super().__init__()
        self.probe, self.probe_seed, self.data_dir = probe, probe_seed, data_dir
        self.where, self.budget_mb = where, budget_mb
        self.only = list(layers) if layers else None
        self.acts: dict[tuple[Key, bool], list[Tensor]] = {}
        self.inputs: dict[str, Tensor] = {}

    def probe_of(self, zoo: Zoo, shuffled: bool = False) -> Tensor:
        """The probe batch of ``zoo`` (its rows in a fixed seeded order when ``shuffled``)."""
        root = str(zoo.root)
        if root not in self.inputs:
            self.inputs[root] = probe_inputs(zoo, self.probe, self.probe_seed, self.data_dir)
        x = self.inputs[root]
        if shuffled:
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(self.probe_seed + 1))]
        return x

    def chain_keys(self, zoo: Zoo, opts: ChainOptions) -> list[tuple]:
        names = self.names(zoo)
        x = probe_batch(zoo.template, 2)
        x = x.float() if torch.is_floating_point(x) else x
        acts = zoo_activations(zoo, zoo.rows[:1], x, names)
        return [((n, acts[n].shape[-1]), acts[n].shape[-1]) for n in names]

    def prepare(self, zoo: Zoo, rows: list[dict], shuffled: bool = False) -> None:
        todo = [r for r in rows if (net_key(zoo, r), shuffled) not in self.acts]
        if not todo:
            return
        names = self.names(zoo)
        acts = zoo_activations(zoo, todo, self.probe_of(zoo, shuffled), names, budget_mb=self.budget_mb)
        for i, r in enumerate(todo):
            self.acts[(net_key(zoo, r), shuffled)] = [acts[n][i] for n in names]

    def names(self, zoo: Zoo) -> list[str]:
        return layer_names(zoo.template, self.where, self.only)

    def inputs_of(self, zoo_a: Zoo, zoo_b: Zoo) -> None:
        """Both zoos' probes must hold the same number of inputs (a probe larger than a zoo's test set shrinks)."""
        na, nb = len(self.probe_of(zoo_a)), len(self.probe_of(zoo_b))
        if na != nb:
            raise DataError(f"measure '{self.name}': the activations of zoo {zoo_a.root} are on {na} probe inputs, "
                            f"those of zoo {zoo_b.root} on {nb}; activations must come from the same inputs: "
                            f"set compare.probe<={min(na, nb)}")

    def layers(self, zoo: Zoo, row: dict, shuffled: bool = False) -> list[Tensor]:
        self.prepare(zoo, [row], shuffled)
        return self.acts[(net_key(zoo, row), shuffled)]

    def describe(self, zoo: Zoo, opts: ChainOptions) -> dict:
        return {"features": self.text, "probe": f"{self.probe} test inputs of the zoo's tasks (seed {self.probe_seed})",
                "layers": self.names(zoo), "where": self.where}


class CKA(ActivationMeasure):
    """1 - linear CKA (Kornblith et al., 2019) per layer."""

    name = "cka"
    text = "1 - linear CKA of the layer's activations on the probe batch"

    def pair(self, zoo_a, row_a, zoo_b, row_b, shuffled=False) -> np.ndarray:
        self.inputs_of(zoo_a, zoo_b)
        a, b = self.layers(zoo_a, row_a), self.layers(zoo_b, row_b, shuffled)
        return np.array([linear_cka(x, y) for x, y in zip(a, b)])  # CKA per layer

    def distance(self, values: np.ndarray) -> np.ndarray:
        return 1.0 - values


class Match(ActivationMeasure):
    """1 - s(eps), the maximum-match similarity (Wang et al., 2018) per layer at ``eps``; the pair's
    values are the whole curve over ``grid`` (``eps`` added to it)."""

    name = "match"
    text = "1 - maximum-match similarity s(eps) of the layer's activations on the probe batch"

    def __init__(self, eps: float = 0.3, grid: tuple[float, ...] = GRID, **kw):
        super().__init__(**kw)
        self.eps, self.grid = eps, tuple(sorted(set(grid) | {eps}))

    def pair(self, zoo_a, row_a, zoo_b, row_b, shuffled=False) -> np.ndarray:
        self.inputs_of(zoo_a, zoo_b)
        a, b = self.layers(zoo_a, row_a), self.layers(zoo_b, row_b, shuffled)
        return np.stack([match_curve(x, y, self.grid) for x, y in zip(a, b)])  # (L, len(grid))

    def distance(self, values: np.ndarray) -> np.ndarray:
        return 1.0 - values[:, self.grid.index(self.eps)]

    def describe(self, zoo: Zoo, opts: ChainOptions) -> dict:
        return {**super().describe(zoo, opts), "eps": self.eps}


class WeightMatching(PairMeasure):
    """Per chain layer, the distance of its tensors after weight matching of the whole nets (Git
    Re-Basin, Ainsworth et al., 2023); ``restarts`` descents from several visit orders."""

    name = "weight_matching"

    def __init__(self, restarts: int = 1, max_iter: int = 100, seed: int = 0):
        super().__init__()
        self.restarts, self.max_iter, self.seed = restarts, max_iter, seed
        self.nets: dict[Key, nn.Module] = {}
        self.naive: dict[tuple[Key, Key], float] = {}  # ||theta_A - theta_B||_2 of each pair matched

    def chain_keys(self, zoo: Zoo, opts: ChainOptions) -> list[tuple]:
        return [((layer.module, layer.c_out), layer.c_out) for layer in chain_layers(zoo.template)]

    def prepare(self, zoo: Zoo, rows: list[dict], shuffled: bool = False) -> None:
        todo = [r for r in rows if net_key(zoo, r) not in self.nets]
        for r, net in zip(todo, zoo.nets(todo) if todo else []):
            self.nets[net_key(zoo, r)] = net

    def net(self, zoo: Zoo, row: dict) -> nn.Module:
        self.prepare(zoo, [row])
        return self.nets[net_key(zoo, row)]

    def pair(self, zoo_a, row_a, zoo_b, row_b, shuffled=False) -> np.ndarray:
        al = weight_matching(self.net(zoo_a, row_a), self.net(zoo_b, row_b), self.max_iter, self.seed, self.restarts)
        self.naive[(net_key(zoo_a, row_a), net_key(zoo_b, row_b))] = al.naive_distance
        return np.array(al.layer_distances)

    def naive_distance(self, zoo_a: Zoo, row_a: dict, zoo_b: Zoo, row_b: dict) -> float:
        """||theta_A - theta_B||_2 before matching (symmetric: either order's match gives it)."""
        self.value(zoo_a, row_a, zoo_b, row_b)
        ka, kb = net_key(zoo_a, row_a), net_key(zoo_b, row_b)
        return self.naive[(ka, kb)] if (ka, kb) in self.naive else self.naive[(kb, ka)]

    def align(self, zoo_a: Zoo, row_a: dict, zoo_b: Zoo, row_b: dict) -> nn.Module:
        """Net B of the pair with its units matched to net A's (a copy, same function)."""
        return weight_matching(self.net(zoo_a, row_a), self.net(zoo_b, row_b), self.max_iter, self.seed,
                               self.restarts).aligned

    def describe(self, zoo: Zoo, opts: ChainOptions) -> dict:
        return {"features": "per chain layer, ||theta_A - pi(theta_B)||_2 of its tensors after weight matching "
                            "of the whole nets", "restarts": self.restarts, "max_iter": self.max_iter}


class ChainGramDistance(DistanceMeasure):
    """Per chain, the Euclidean distance between two nets' chain Gram features (no classifier)."""

    name = "chain_gram_distance"

    def __init__(self):
        self.gram = ChainGram()

    def chain_keys(self, zoo: Zoo, opts: ChainOptions) -> list[tuple]:
        return self.gram.chain_keys(zoo, opts)

    def distances(self, zoo_a: Zoo, rows_a: list[dict], zoo_b: Zoo, rows_b: list[dict],
                  opts: ChainOptions) -> list[Tensor]:
        fa, fb = self.gram.features(zoo_a, rows_a, opts), self.gram.features(zoo_b, rows_b, opts)
        return [torch.cdist(a.double(), b.double()) for a, b in zip(fa, fb)]  # ||g_a - g_b||_2

    def describe(self, zoo: Zoo, opts: ChainOptions) -> dict:
        return {**self.gram.describe(zoo, opts), "features": "Euclidean distance between the chain Gram features "
                "(" + self.gram.describe(zoo, opts)["features"] + ")"}


COMPARE_MEASURES = {m.name: m for m in (CKA, Match, WeightMatching, ChainGramDistance)}


def make_measure(name: str, **settings) -> DistanceMeasure:
    """A compare measure with ``settings`` (those its class takes; the rest are ignored)."""
    import inspect

    if name not in COMPARE_MEASURES:
        raise ConfigError(f"unknown compare measure '{name}': choose from {', '.join(COMPARE_MEASURES)}")
    cls = COMPARE_MEASURES[name]
    takes = set(inspect.signature(cls.__init__).parameters)
    if cls is Match:
        takes |= set(inspect.signature(ActivationMeasure.__init__).parameters)
    return cls(**{k: v for k, v in settings.items() if k in takes})
