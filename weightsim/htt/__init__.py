"""Hypothesis-training-testing: per-chain weight classifiers and the two test protocols."""

from weightsim.htt.classifier import WeightClassifier, fit_classifier
from weightsim.htt.protocols import cmc_curve, decide, split_seeds
from weightsim.htt.stats import clopper_pearson, permutation_p_value

__all__ = ["WeightClassifier", "fit_classifier", "cmc_curve", "decide", "split_seeds",
           "clopper_pearson", "permutation_p_value"]
