"""Statistics beside the bare comparison: Clopper-Pearson bounds and permutation p-values."""

from __future__ import annotations

import numpy as np
from scipy.stats import beta


def clopper_pearson(errors: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for an error rate of errors / n."""
    a = 1.0 - confidence
    lo = 0.0 if errors == 0 else float(beta.ppf(a / 2, errors, n - errors + 1))
    hi = 1.0 if errors == n else float(beta.ppf(1 - a / 2, errors + 1, n - errors))
    return lo, hi


def permutation_p_value(observed: float, null: np.ndarray | list[float]) -> float | None:
    """p = (1 + #{null >= observed}) / (1 + P): chance of an accuracy this high under shuffled labels."""
    null = np.asarray(null, dtype=float)
    if null.size == 0:
        return None
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))
