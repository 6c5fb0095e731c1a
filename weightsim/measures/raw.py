"""The unnormalized baseline measure: layer l's weight tensor(s) flattened (``raw``)."""

from __future__ import annotations

import torch
from torch import Tensor

from weightsim.chains import zoo_raw_features
from weightsim.nets.spec import chain_layers
from weightsim.measures.base import Measure
from weightsim.zoo.view import Zoo


class RawLayers(Measure):
    """The unnormalized baseline: layer l's weight tensor(s) flattened."""

    name = "raw"
    # D reaches 10^6 per layer, so its Gram is HTT's largest cost: float32 keeps the classifier's
    # result (tests/test_htt_gram.py::test_raw_in_float32_keeps_the_results)
    gram_dtype = torch.float32

    def chain_keys(self, zoo: Zoo) -> list[tuple]:
        template = zoo.template
        sizes = {k: v.numel() for k, v in template.state_dict().items()}
        return [(n, n) for n in (sum(sizes[p] for p in layer.raw) for layer in chain_layers(template))]

    def features(self, zoo: Zoo, rows: list[dict]) -> list[Tensor]:
        return zoo_raw_features(zoo.template, zoo.stacked(rows))

    def features_from(self, zoo: Zoo, rows: list[dict], stacked: dict[str, Tensor]) -> list[Tensor]:
        return zoo_raw_features(zoo.template, stacked)

    def describe(self, zoo: Zoo) -> dict:
        return {"features": "layer l's weight(s) flattened"}
