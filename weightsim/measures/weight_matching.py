"""The weight-matching measure (``weight_matching``): per chain layer, ||theta_A - pi(theta_B)||_2 of
its tensors after weight matching of the whole nets (Git Re-Basin, Ainsworth et al., 2023;
measures/align.py). Its settings are the Hydra group ``measure/weight_matching``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from weightsim.nets.spec import chain_layers
from weightsim.errors import ConfigError
from weightsim.measures.align import weight_matching
from weightsim.measures.pairs import Key, PairMeasure, net_key
from weightsim.zoo.view import Zoo


@dataclass
class WeightMatchingSettings:
    """The ``measure/weight_matching`` group."""

    restarts: int = 1  # descents from this many visit orders
    max_iter: int = 100  # sweeps per descent
    seed: int = 0  # the visit orders of the restarts

    def __post_init__(self):
        for knob in ("restarts", "max_iter"):
            if getattr(self, knob) < 1:
                raise ConfigError(f"measure.weight_matching.{knob}={getattr(self, knob)} must be >= 1")


class WeightMatching(PairMeasure):
    """Per chain layer, the distance of its tensors after weight matching of the whole nets;
    ``restarts`` descents from several visit orders."""

    name = "weight_matching"
    Settings = WeightMatchingSettings

    def __init__(self, settings=None, context=None):
        super().__init__(settings, context)
        self.nets: dict[Key, nn.Module] = {}
        self.naive: dict[tuple[Key, Key], float] = {}  # ||theta_A - theta_B||_2 of each pair matched

    def chain_keys(self, zoo: Zoo) -> list[tuple]:
        return [((layer.module, layer.c_out), layer.c_out) for layer in chain_layers(zoo.template)]

    def prepare(self, zoo: Zoo, rows: list[dict], shuffled: bool = False) -> None:
        todo = [r for r in rows if net_key(zoo, r) not in self.nets]
        for r, net in zip(todo, zoo.nets(todo) if todo else []):
            self.nets[net_key(zoo, r)] = net

    def net(self, zoo: Zoo, row: dict) -> nn.Module:
        self.prepare(zoo, [row])
        return self.nets[net_key(zoo, row)]

    def match(self, zoo_a: Zoo, row_a: dict, zoo_b: Zoo, row_b: dict):
        s = self.settings
        return weight_matching(self.net(zoo_a, row_a), self.net(zoo_b, row_b), s.max_iter, s.seed, s.restarts)

    def pair(self, zoo_a, row_a, zoo_b, row_b, shuffled=False) -> np.ndarray:
        al = self.match(zoo_a, row_a, zoo_b, row_b)
        self.naive[(net_key(zoo_a, row_a), net_key(zoo_b, row_b))] = al.naive_distance
        return np.array(al.layer_distances)

    def naive_distance(self, zoo_a: Zoo, row_a: dict, zoo_b: Zoo, row_b: dict) -> float:
        """||theta_A - theta_B||_2 before matching (symmetric: either order's match gives it)."""
        self.value(zoo_a, row_a, zoo_b, row_b)
        ka, kb = net_key(zoo_a, row_a), net_key(zoo_b, row_b)
        return self.naive[(ka, kb)] if (ka, kb) in self.naive else self.naive[(kb, ka)]

    def align(self, zoo_a: Zoo, row_a: dict, zoo_b: Zoo, row_b: dict) -> nn.Module:
        """Net B of the pair with its units matched to net A's (a copy, same function)."""
        return self.match(zoo_a, row_a, zoo_b, row_b).aligned

    def describe(self, zoo: Zoo) -> dict:
        return {"features": "per chain layer, ||theta_A - pi(theta_B)||_2 of its tensors after weight matching "
                            "of the whole nets", "restarts": self.settings.restarts, "max_iter": self.settings.max_iter}
