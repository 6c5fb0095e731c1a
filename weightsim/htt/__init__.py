"""Hypothesis-training-testing: per-chain weight classifiers, the two test protocols and their statistics;
``test(nets_or_features, tasks)`` runs it in one call (htt/one_call.py)."""

from typing import TYPE_CHECKING

from weightsim.lazy import lazy_exports

if TYPE_CHECKING:  # at run time each name is imported on first use (weightsim/lazy.py)
    from weightsim.htt.classifier import WeightClassifier, fit_classifier
    from weightsim.htt.one_call import test
    from weightsim.htt.protocols import (accuracy, cmc_curve, decide, distances, effect_size, knn_classify, knn_null,
                                         retrieval_null, split_seeds)
    from weightsim.htt.stats import error_upper_bound, mean_sd, permutation_p_value
    from weightsim.measures import MEASURES, Measure, make_measure

__all__ = ["WeightClassifier", "fit_classifier", "MEASURES", "Measure", "make_measure", "accuracy", "cmc_curve",
           "decide", "distances", "effect_size", "knn_classify", "knn_null", "retrieval_null", "split_seeds",
           "error_upper_bound", "mean_sd", "permutation_p_value", "test"]
__getattr__ = lazy_exports(__name__, {
    **dict.fromkeys(["MEASURES", "Measure", "make_measure"], "weightsim.measures"),
    "WeightClassifier": ".classifier", "fit_classifier": ".classifier", "test": ".one_call",
    **dict.fromkeys(["accuracy", "cmc_curve", "decide", "distances", "effect_size", "knn_classify", "knn_null",
                     "retrieval_null", "split_seeds"], ".protocols"),
    **dict.fromkeys(["error_upper_bound", "mean_sd", "permutation_p_value"], ".stats")})
