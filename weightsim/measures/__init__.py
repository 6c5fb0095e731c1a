"""Measures: what HTT and weightsim-compare test. A measure turns each net of a zoo into per-chain
features (``Measure``: the chain Grams, the raw weights) or net x net distances per layer
(``DistanceMeasure``: CKA, subspace match, weight matching, the chain-Gram distance); each owns its
settings (a dataclass, the Hydra group ``measure/<name>``). The similarity functions themselves
(``cka``, ``subspace``, ``align``, ``activations``) live beside them."""

from weightsim.measures.base import DistanceMeasure, Measure, MeasureContext, NoSettings, pairwise_distances
from weightsim.measures.registry import MEASURES, make_measure, make_measures, measure_class

__all__ = ["DistanceMeasure", "Measure", "MeasureContext", "NoSettings", "pairwise_distances", "MEASURES",
           "make_measure", "make_measures", "measure_class"]
