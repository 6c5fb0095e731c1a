"""Features given per chain instead of nets (``features``): what ``weightsim.htt.test(features,
tasks)`` tests."""

from __future__ import annotations

from torch import Tensor

from weightsim.errors import ConfigError
from weightsim.measures.base import Measure
from weightsim.zoo.view import Zoo


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

    def chain_keys(self, zoo: Zoo) -> list[tuple]:
        return [((f"chain{c}", d), d) for c, d in enumerate(self.dims(zoo), 1)]

    def features(self, zoo: Zoo, rows: list[dict]) -> list[Tensor]:
        return self.features_from(zoo, rows, zoo.stacked(rows))

    def features_from(self, zoo: Zoo, rows: list[dict], stacked: dict[str, Tensor]) -> list[Tensor]:
        return [stacked[f"chain{c}"] for c in range(1, len(self.dims(zoo)) + 1)]

    def describe(self, zoo: Zoo) -> dict:
        return {"features": "given per chain (weightsim.htt.test on features)", "dims": self.dims(zoo)}
