"""The measure registry: name -> measure class. Every measure is built the same way, from its own
settings (its ``Settings`` dataclass: the Hydra group ``measure/<name>``) and the run-wide
``MeasureContext``; ``protocol.measures`` (weightsim-htt) and ``compare.measures`` (weightsim-compare)
name measures from here and read the same settings. A new measure is one class and one entry in
``MEASURES``."""

from __future__ import annotations

from dataclasses import asdict, fields, is_dataclass
from typing import Any

from weightsim.errors import ConfigError
from weightsim.measures.activation import CKA, SubspaceMatch
from weightsim.measures.base import Measure, MeasureContext
from weightsim.measures.chain_gram import ChainGram, ChainGramDistance
from weightsim.measures.given import GivenFeatures
from weightsim.measures.raw import RawLayers
from weightsim.measures.weight_matching import WeightMatching

MEASURES: dict[str, type[Measure]] = {m.name: m for m in (ChainGram, RawLayers, GivenFeatures, CKA, SubspaceMatch,
                                                          WeightMatching, ChainGramDistance)}
# measures a user names in a config: the given features are what weightsim.htt.test passes itself
CONFIGURABLE = [name for name in MEASURES if name != GivenFeatures.name]


def measure_class(name: str, key: str = "protocol.measures") -> type[Measure]:
    """The registered measure class ``name``; an unknown one is an error naming ``key`` and the choices."""
    if name not in MEASURES:
        raise ConfigError(f"unknown {key} entry '{name}': choose from {', '.join(MEASURES)}")
    return MEASURES[name]


def make_measure(name: str, settings: Any = None, context: MeasureContext | None = None,
                 key: str = "protocol.measures") -> Measure:
    """Measure ``name`` with ``settings`` (its Settings dataclass, a dict of its fields, or None for
    the defaults) in ``context``."""
    cls = measure_class(name, key)
    if settings is not None and not isinstance(settings, cls.Settings):
        settings = cls.Settings(**(asdict(settings) if is_dataclass(settings) else dict(settings)))
    return cls(settings, context)


def make_measures(names: list[str], settings: dict[str, Any] | None = None, context: MeasureContext | None = None,
                  key: str = "protocol.measures") -> list[Measure]:
    """The measures ``names``, each with its entry of ``settings`` (the ``measure`` config node:
    name -> settings; a missing entry: the defaults)."""
    if not names:
        raise ConfigError(f"{key} is empty: name at least one measure")
    return [make_measure(n, (settings or {}).get(n), context, key) for n in names]


def settings_groups() -> dict[tuple[str, str], type]:
    """(group, choice) -> Settings dataclass: ``measure/<name>`` of every configurable measure that
    has settings of its own, for Hydra's ConfigStore (weightsim/config.py). chain_gram and
    chain_gram_distance read the ``chains`` group and ``protocol.metric`` (their context)."""
    return {(f"measure/{name}", "default"): MEASURES[name].Settings for name in CONFIGURABLE
            if fields(MEASURES[name].Settings)}
