"""Statistics beside the bare comparison: the one-sided Clopper-Pearson bound on an error rate,
permutation p-values and the spread of repeated splits."""

from __future__ import annotations

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
