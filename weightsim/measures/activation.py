"""The activation measures: two nets compared by their activations on one probe batch, per layer
(hidden layers, then the logits). ``cka``: 1 - linear CKA; ``match``: 1 - s(eps), the neuron
activation subspace match similarity at one eps. Each also gives the value with net B's probe inputs
in a shuffled order (``shuffled=True``), the null of an activation comparison: nothing in common but
the marginals. Their settings are the Hydra groups ``measure/cka`` and ``measure/match``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from weightsim.errors import ConfigError, DataError
from weightsim.measures.activations import WHERE, layer_names, probe_inputs
from weightsim.measures.align import probe_batch
from weightsim.measures.cka import linear_cka
from weightsim.measures.pairs import Key, PairMeasure, net_key
from weightsim.measures.subspace import GRID, match_curve
from weightsim.zoo.view import Zoo


@dataclass
class ProbeSettings:
    """What an activation measure feeds the nets and which layers it compares."""

    key: ClassVar[str] = "measure.cka"  # the settings' place in the config, for messages
    probe: int = 256  # probe inputs (test inputs of the zoo's tasks, seeded order)
    probe_seed: int = 0
    data_dir: str | None = None  # where the zoo's dataset lies (null: the loader's default)
    where: str = "post"  # activations after the activation function (post) or the Linear / Conv output (pre)
    layers: list[str] | None = None  # activation layers to compare (module names, "logits"); null: all
    budget_mb: float = 256.0  # activations of a block of nets computed at once

    def __post_init__(self):
        if self.layers is not None and len(self.layers) == 0:
            raise ConfigError(f"{self.key}.layers=[] names no layer: name some (module names, logits) or set "
                              f"{self.key}.layers=null for every layer")
        if self.probe < 2:
            raise ConfigError(f"{self.key}.probe={self.probe} must be >= 2")
        if self.budget_mb <= 0:
            raise ConfigError(f"{self.key}.budget_mb={self.budget_mb} must be > 0")
        if self.where not in WHERE:
            raise ConfigError(f"{self.key}.where='{self.where}': choose post (after the activation function) or pre "
                              f"(the Linear / Conv output feeding it)")


@dataclass
class CKASettings(ProbeSettings):
    """The ``measure/cka`` group."""


@dataclass
class MatchSettings(ProbeSettings):
    """The ``measure/match`` group: the probe, and the eps of the distance 1 - s(eps)."""

    key: ClassVar[str] = "measure.match"
    eps: float = 0.3  # the distance is 1 - s(eps)
    eps_grid: list[float] = field(default_factory=lambda: list(GRID))  # the eps-curves of compare.csv

    def __post_init__(self):
        super().__post_init__()
        for e in [self.eps, *self.eps_grid]:
            if not 0 < e < 1:
                raise ConfigError(f"match eps {e} must lie in (0, 1) ({self.key}.eps, {self.key}.eps_grid)")


class ActivationMeasure(PairMeasure):
    """A measure of two nets' activations on one probe batch: ``probe`` inputs of the zoo's tasks
    (test inputs, seeded order), layers as ``layer_names(where)``, computed in blocks of nets within
    ``budget_mb`` and kept per net."""

    Settings = ProbeSettings
    text = ""

    def __init__(self, settings=None, context=None):
        super().__init__(settings, context)
        self.acts: dict[tuple[Key, bool], list[Tensor]] = {}
        self.inputs: dict[str, Tensor] = {}

    def probe_of(self, zoo: Zoo, shuffled: bool = False) -> Tensor:
        """The probe batch of ``zoo`` (its rows in a fixed seeded order when ``shuffled``)."""
        s, root = self.settings, str(zoo.root)
        if root not in self.inputs:
            self.inputs[root] = probe_inputs(zoo, s.probe, s.probe_seed, s.data_dir, s.key)
        x = self.inputs[root]
        if shuffled:
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(s.probe_seed + 1))]
        return x

    def chain_keys(self, zoo: Zoo) -> list[tuple]:
        names = self.names(zoo)
        x = probe_batch(zoo.template, 2)
        x = x.float() if torch.is_floating_point(x) else x
        acts = zoo.activations(zoo.rows[:1], x, names, key=self.settings.key)
        return [((n, acts[n].shape[-1]), acts[n].shape[-1]) for n in names]

    def prepare(self, zoo: Zoo, rows: list[dict], shuffled: bool = False) -> None:
        todo = [r for r in rows if (net_key(zoo, r), shuffled) not in self.acts]
        if not todo:
            return
        names = self.names(zoo)
        acts = zoo.activations(todo, self.probe_of(zoo, shuffled), names, budget_mb=self.settings.budget_mb,
                               key=self.settings.key)
        for i, r in enumerate(todo):
            self.acts[(net_key(zoo, r), shuffled)] = [acts[n][i] for n in names]

    def names(self, zoo: Zoo) -> list[str]:
        return layer_names(zoo.template, self.settings.where, self.settings.layers, self.settings.key)

    def inputs_of(self, zoo_a: Zoo, zoo_b: Zoo) -> None:
        """Both zoos' probes must hold the same number of inputs (a probe larger than a zoo's test set shrinks)."""
        na, nb = len(self.probe_of(zoo_a)), len(self.probe_of(zoo_b))
        if na != nb:
            raise DataError(f"measure '{self.name}': the activations of zoo {zoo_a.root} are on {na} probe inputs, "
                            f"those of zoo {zoo_b.root} on {nb}; activations must come from the same inputs: "
                            f"set {self.settings.key}.probe<={min(na, nb)}")

    def layers(self, zoo: Zoo, row: dict, shuffled: bool = False) -> list[Tensor]:
        self.prepare(zoo, [row], shuffled)
        return self.acts[(net_key(zoo, row), shuffled)]

    def describe(self, zoo: Zoo) -> dict:
        s = self.settings
        return {"features": self.text, "probe": f"{s.probe} test inputs of the zoo's tasks (seed {s.probe_seed})",
                "layers": self.names(zoo), "where": s.where}


class CKA(ActivationMeasure):
    """1 - linear CKA (Kornblith et al., 2019) per layer."""

    name = "cka"
    Settings = CKASettings
    text = "1 - linear CKA of the layer's activations on the probe batch"

    def pair(self, zoo_a, row_a, zoo_b, row_b, shuffled=False) -> np.ndarray:
        self.inputs_of(zoo_a, zoo_b)
        a, b = self.layers(zoo_a, row_a), self.layers(zoo_b, row_b, shuffled)
        return np.array([linear_cka(x, y) for x, y in zip(a, b)])  # CKA per layer

    def distance(self, values: np.ndarray) -> np.ndarray:
        return 1.0 - values


class SubspaceMatch(ActivationMeasure):
    """1 - s(eps), the maximum-match similarity (Wang et al., 2018) per layer at ``eps``; the pair's
    values are the whole curve over ``eps_grid`` (``eps`` added to it)."""

    name = "match"
    Settings = MatchSettings
    text = "1 - maximum-match similarity s(eps) of the layer's activations on the probe batch"

    def __init__(self, settings=None, context=None):
        super().__init__(settings, context)
        self.eps = self.settings.eps
        self.grid = tuple(sorted(set(self.settings.eps_grid) | {self.eps}))

    def pair(self, zoo_a, row_a, zoo_b, row_b, shuffled=False) -> np.ndarray:
        self.inputs_of(zoo_a, zoo_b)
        a, b = self.layers(zoo_a, row_a), self.layers(zoo_b, row_b, shuffled)
        return np.stack([match_curve(x, y, self.grid) for x, y in zip(a, b)])  # (L, len(grid))

    def distance(self, values: np.ndarray) -> np.ndarray:
        return 1.0 - values[:, self.grid.index(self.eps)]

    def describe(self, zoo: Zoo) -> dict:
        return {**super().describe(zoo), "eps": self.eps}
