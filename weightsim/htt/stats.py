"""Statistics beside the bare comparison: the one-sided Clopper-Pearson bound on an error rate,
permutation p-values and the spread of repeated splits."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta


def error_upper_bound(errors: int, n: int, level: float) -> float:
    """One-sided exact (Clopper-Pearson) upper confidence bound at ``level`` on an error rate seen
    as errors / n: the largest p with P(Binomial(n, p) <= errors) >= 1 - level, i.e. the ``level``
    quantile of Beta(errors + 1, n - errors). For errors = 0 it is 1 - (1 - level)^(1/n)."""
    if not 0 <= errors <= n or n < 1:
        raise ValueError(f"error_upper_bound needs 0 <= errors <= n and n >= 1, got {errors} of {n}")
    if errors == n:
        return 1.0
    return float(beta.ppf(level, errors + 1, n - errors))


def permutation_p_value(observed: float, null: np.ndarray | list[float]) -> float | None:
    """p = (1 + #{null >= observed}) / (1 + P): the share of the P permuted statistics (plus the
    observed one) at least as high as the observed one. None without a null (P = 0)."""
    null = np.asarray(null, dtype=float)
    if null.size == 0:
        return None
    # ties count: an observed rate from float32 (torchmetrics' hit rate) sits up to ~1e-8 above the
    # same rate in float64, and rates k/n of n <= 1e5 items lie >= 1e-5 apart
    return float((1 + np.sum(null >= observed - 1e-7)) / (1 + null.size))


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def distinct_labelings(tasks: int, per_task: int) -> float:
    """(T n)! / (n!)^T: the distinct ways to label T n training nets with T tasks, n nets each (the
    label vectors a shuffle of the true one can give); inf where that exceeds a float."""
    log = math.lgamma(tasks * per_task + 1) - tasks * math.lgamma(per_task + 1)
    return math.exp(log) if log < 700 else math.inf


def smallest_p_value(n_permutations: int, tasks: int, per_task: int) -> float:
    """The smallest p-value classification's label-permutation null can give, on average: with P
    shuffled-label heads p >= 1 / (1 + P), and one shuffle in L (``distinct_labelings``) is the true
    labeling, whose head scores as well as the real one, so E[p] >= (1 + P / L) / (1 + P)."""
    return (1 + n_permutations / distinct_labelings(tasks, per_task)) / (1 + n_permutations)
