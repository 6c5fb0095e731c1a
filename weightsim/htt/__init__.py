"""Hypothesis-training-testing: per-chain weight classifiers, the two test protocols and their statistics;
``test(nets_or_features, tasks)`` runs it in one call (htt/one_call.py)."""

from weightsim.htt.classifier import WeightClassifier, fit_classifier
from weightsim.htt.protocols import (accuracy, cmc_curve, decide, distances, effect_size, knn_classify, knn_null,
                                     retrieval_null, split_seeds)
from weightsim.htt.one_call import test
from weightsim.htt.stats import error_upper_bound, mean_sd, permutation_p_value
from weightsim.measures import MEASURES, Measure, make_measure

__all__ = ["WeightClassifier", "fit_classifier", "MEASURES", "Measure", "make_measure", "accuracy", "cmc_curve",
           "decide", "distances", "effect_size", "knn_classify", "knn_null", "retrieval_null", "split_seeds",
           "error_upper_bound", "mean_sd", "permutation_p_value", "test"]
