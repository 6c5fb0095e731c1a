"""HTT's report rows: per measure, protocol and chain a row of the outcomes over the repeats, and
the overall row of the paper's Algorithm 1 (H0 accepted only when every chain accepts)."""

from __future__ import annotations

import math

from weightsim.htt.evaluate import Outcome
from weightsim.htt.settings import PROTOCOLS, ProtocolConfig
from weightsim.htt.protocols import decide
from weightsim.htt.stats import error_upper_bound, mean_sd, permutation_p_value
from weightsim.measures import Measure


def chain_row(protocol: str, measure: str, chain: int | str, dim: int | None, runs: list[Outcome],
              pc: ProtocolConfig) -> dict:
    """One report row from a chain's outcomes over the repeats (runs[0]: the paper's split)."""
    first = runs[0]
    error = 1.0 - first.accuracy
    bound = error_upper_bound(int(round(error * first.n)), first.n, 1 - pc.alpha)
    mean, sd = mean_sd([o.accuracy for o in runs])
    null = first.null if first.null is not None and first.null.numel() else None
    return {"protocol": protocol, "measure": measure, "chain": chain, "accuracy": first.accuracy,
            "accuracy_mean": mean, "accuracy_sd": sd, "repeats": len(runs),
            "effect_size": None if math.isnan(first.effect) else first.effect,
            "error": error, "error_upper_bound": bound, "bound_level": 1 - pc.alpha, "alpha": pc.alpha,
            "decision": decide(error, pc.alpha), "decision_bound": "accept" if bound < pc.alpha else "reject",
            "p_value": permutation_p_value(first.accuracy, null.numpy()) if null is not None else None,
            "null_mean": float(null.mean()) if null is not None else None,
            "rank5": float(first.cmc[min(4, len(first.cmc) - 1)]) if first.cmc is not None else None,
            "feature_dim": dim, "n": first.n}


def overall_row(rows: list[dict]) -> dict:
    """The paper's Algorithm 1 over chains: accept H0 only when every chain accepts (likewise for
    the bound's decision). Worst chain: lowest accuracy and effect size, highest error, bound and
    p-value (every chain beats chance at level a iff the largest p <= a)."""
    ps = [r["p_value"] for r in rows]
    return {**rows[0], "chain": "all", "accuracy": min(r["accuracy"] for r in rows),
            "accuracy_mean": min(r["accuracy_mean"] for r in rows), "accuracy_sd": None,
            "effect_size": min((r["effect_size"] for r in rows if r["effect_size"] is not None), default=None),
            "error": max(r["error"] for r in rows),
            "error_upper_bound": max(r["error_upper_bound"] for r in rows),
            "decision": "accept" if all(r["decision"] == "accept" for r in rows) else "reject",
            "decision_bound": "accept" if all(r["decision_bound"] == "accept" for r in rows) else "reject",
            "p_value": None if None in ps else max(ps), "null_mean": None, "rank5": None, "feature_dim": None}


def measure_rows(measure: Measure, chains: list[int], keys_a: list, runs: dict[int, list[dict[str, Outcome]]],
                 pc: ProtocolConfig) -> tuple[list[dict], dict]:
    """One measure's report rows (per chain, then the overall row per protocol) and its CMC curves
    {(chain, measure): curve} of the paper's split."""
    rows, cmc = [], {}
    for protocol in [p for p in PROTOCOLS if p in runs[chains[0]][0]]:
        per_chain = [chain_row(protocol, measure.name, c, int(keys_a[c - 1][1]), [r[protocol] for r in runs[c]], pc)
                     for c in chains]
        rows += per_chain + [overall_row(per_chain)]
    for c in chains:
        if "retrieval" in runs[c][0]:
            cmc[(c, measure.name)] = runs[c][0]["retrieval"].cmc
    return rows, cmc
