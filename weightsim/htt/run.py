"""Hypothesis-training-testing on a zoo: per chain, train a weight classifier, then test it with
the classification protocol (held-out seeds of the training tasks) and the retrieval protocol
(unseen tasks), normalized chains against raw layers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from weightsim.errors import ChainError, ConfigError, ZooError
from weightsim.chains.core import chain_layers
from weightsim.htt.classifier import fit_reduced, gram_reduction
from weightsim.htt.features import ChainOptions, describe_zoo_chains, zoo_features, zoo_template
from weightsim.htt.gram import chain_grams
from weightsim.htt.protocols import cmc_curve, decide, distances, retrieval_split, split_seeds
from weightsim.htt.stats import clopper_pearson, permutation_p_value
from weightsim.zoo.store import ZooReader


@dataclass
class ProtocolConfig:
    alpha: float = 0.05
    train_fraction: float = 0.6  # share of each task's seeds that trains the classifier (paper: 60/40)
    train_seeds: int | None = None  # an exact count overrides train_fraction
    queries: int = 6  # per unseen task, the lowest seeds are queries; the rest are the gallery
    metric: str = "euclidean"
    max_rank: int = 10
    n_permutations: int = 19  # label-permutation null heads per fit (0: off)
    confidence: float = 0.95  # Clopper-Pearson level
    protocols: list[str] = field(default_factory=lambda: ["classification", "retrieval"])
    kinds: list[str] = field(default_factory=lambda: ["normalized", "raw"])
    chains: list[int] | None = None  # which chains to test (1-based); null: all that both nets have
    feature_budget_gb: float = 4.0  # chain features held at once; larger zoos stream their Grams (htt/gram.py)


@dataclass
class ClassifierConfig:
    l2: float = 1.0  # L2 penalty on the projection, objective sum CE + l2/2 ||W||^2 (scikit-learn C = 1/l2)
    max_iter: int = 500  # L-BFGS iterations (the objective is convex: run to its optimum)
    accelerator: str = "cpu"


def check_protocol(pc: ProtocolConfig) -> None:
    decide(0.0, pc.alpha)  # validates alpha
    if not 0 < pc.train_fraction < 1:
        raise ConfigError(f"protocol.train_fraction={pc.train_fraction} must lie in (0, 1)")
    for p in pc.protocols:
        if p not in ("classification", "retrieval"):
            raise ConfigError(f"unknown protocol '{p}': choose classification, retrieval")
    for k in pc.kinds:
        if k not in ("normalized", "raw"):
            raise ConfigError(f"unknown feature kind '{k}': choose normalized, raw")
    if pc.feature_budget_gb <= 0:
        raise ConfigError(f"protocol.feature_budget_gb={pc.feature_budget_gb} must be > 0")


def shared_chains(keys_a: list, keys_b: list, wanted: list[int] | None, cross: bool) -> list[int]:
    """The chains to test: those ``wanted`` (default: every chain both zoos have). keys_a / keys_b:
    per chain what makes it the same chain in both nets (normalized: the exact row count d_l and the
    feature size, so a sketched FC chain never pairs with a sketched conv chain of equal size; raw:
    the layer's size). A chain asked for that the two nets do not share is an error naming it."""
    both = [c for c in range(1, min(len(keys_a), len(keys_b)) + 1) if keys_a[c - 1] == keys_b[c - 1]]
    missing = [c for c in (wanted or []) if c not in both]
    if missing or not both:
        where = (f"the train zoo's chains are {keys_a}, the eval zoo's {keys_b}" if cross
                 else f"the zoo's chains are {keys_a}")
        raise ChainError(f"chain(s) {missing or 'any'} do not exist in both nets: {where}; "
                         f"set protocol.chains to some of {both}")
    return list(wanted) if wanted else both


def chain_keys(reader: ZooReader, plan: list[dict] | None) -> list:
    """Per chain: (d_l, feature size) from the chain plan (normalized), or the layer's weight count
    (raw), read off the architecture without loading any net."""
    if plan is not None:
        return [(p["rows_exact"], p["feature_dim"]) for p in plan]
    template = zoo_template(reader)
    shapes = {k: v.numel() for k, v in template.state_dict().items()}
    return [sum(shapes[n] for n in layer.raw) for layer in chain_layers(template)]


def file_order(rows: list[dict]) -> tuple[list[dict], Tensor]:
    """``rows`` in (task, seed) order, the order of the zoo's files, and the permutation back:
    sorted_rows[back[i]] is rows[i]."""
    order = sorted(range(len(rows)), key=lambda j: (rows[j]["task"], rows[j]["seed"]))
    return [rows[j] for j in order], torch.argsort(torch.tensor(order, dtype=torch.long))


def grams_of(parts: list[tuple[ZooReader, list[dict]]], chains: list[int], normalized: bool, opts: ChainOptions,
             budget_gb: float, progress=None) -> list[tuple[Tensor, list[Tensor]]]:
    """Per chain in ``chains``: the Gram of the standardized features of parts[0] (the training
    nets) and the cross-Grams of the other parts with them, rows in each part's given order
    (htt/gram.py: streamed in blocks when the features exceed ``budget_gb``)."""
    ordered = [file_order(rows) for _, rows in parts]

    def featurize(g: int, rows: list[dict]) -> list[Tensor]:
        feats = zoo_features(parts[g][0], rows, normalized, opts)
        return [feats[c - 1] for c in chains]

    grams = chain_grams([o[0] for o in ordered], featurize, budget_gb * 2**30, progress)
    b0 = ordered[0][1]
    return [(g.train[b0][:, b0], [x[back][:, b0] for x, (_, back) in zip(g.cross, ordered[1:])]) for g in grams]


def usable_rows(reader: ZooReader) -> tuple[list[dict], int]:
    rows = [r for r in reader.rows if not r["diverged"]]
    return rows, len(reader.rows) - len(rows)


def run_htt(zoo_dir: str, pc: ProtocolConfig, cc: ClassifierConfig, co: ChainOptions,
            eval_zoo_dir: str | None = None, seed: int = 0, logger=None, progress: bool = True) -> dict:
    """Returns {"rows": report rows, "cmc": {(chain, kind): curve}, "meta": {...}}.

    eval_zoo_dir: cross-network evaluation; the classifier trains on ``zoo_dir`` and is tested on
    the nets of ``eval_zoo_dir`` (same tasks), chain by chain.
    """
    check_protocol(pc)
    train_zoo = ZooReader(zoo_dir)
    eval_zoo = ZooReader(eval_zoo_dir) if eval_zoo_dir else train_zoo
    rows_a, div_a = usable_rows(train_zoo)
    rows_b, div_b = usable_rows(eval_zoo) if eval_zoo is not train_zoo else (rows_a, div_a)
    seen_a = [r for r in rows_a if r["role"] == "train"]
    seen_b = [r for r in rows_b if r["role"] == "train"]
    unseen = [r for r in rows_b if r["role"] == "unseen"]
    tasks = sorted({r["task"] for r in seen_a})
    if len(tasks) < 2:
        raise ZooError(f"zoo {zoo_dir} has {len(tasks)} usable training task(s); HTT needs at least 2")
    per_task = min(sum(r["task"] == t for r in seen_a) for t in tasks)
    n_train = pc.train_seeds if pc.train_seeds is not None else max(1, int(round(pc.train_fraction * per_task)))
    if n_train < 1:
        raise ConfigError(f"protocol.train_seeds={n_train} must be >= 1")
    tr_idx, _ = split_seeds(seen_a, n_train)
    _, te_idx = split_seeds(seen_b, n_train)
    label_of = {t: i for i, t in enumerate(tasks)}
    y_train = torch.tensor([label_of[seen_a[i]["task"]] for i in tr_idx])
    missing = {seen_b[i]["task"] for i in te_idx} - set(tasks)
    if missing:
        raise ZooError(f"eval zoo {eval_zoo_dir} has training tasks {sorted(missing)} that {zoo_dir} lacks")
    y_test = torch.tensor([label_of[seen_b[i]["task"]] for i in te_idx])
    do_retrieval = "retrieval" in pc.protocols and unseen
    if do_retrieval:
        q_idx, g_idx = retrieval_split(unseen, pc.queries)
        q_lab = torch.tensor([unseen[i]["task"] for i in q_idx])
        g_lab = torch.tensor([unseen[i]["task"] for i in g_idx])

    plan_a = describe_zoo_chains(train_zoo, co)
    plan_b = describe_zoo_chains(eval_zoo, co) if eval_zoo is not train_zoo else plan_a
    report, cmcs = [], {}
    jobs = [(k, k == "normalized") for k in pc.kinds]
    bar = tqdm(desc="htt", unit="fit", disable=not progress)
    for kind, normalized in jobs:
        keys_a = chain_keys(train_zoo, plan_a if normalized else None)
        chains = shared_chains(keys_a, chain_keys(eval_zoo, plan_b if normalized else None), pc.chains,
                               eval_zoo is not train_zoo)
        dims = [k[1] for k in keys_a] if normalized else keys_a  # feature size per chain
        bar.total = len(jobs) * len(chains)
        grams = grams_of([(train_zoo, [seen_a[i] for i in tr_idx]), (eval_zoo, [seen_b[i] for i in te_idx]),
                          (eval_zoo, unseen if do_retrieval else [])], chains, normalized, co,
                         pc.feature_budget_gb, bar.set_postfix_str)
        for c, (g_train, (g_test, g_unseen)) in zip(chains, grams):
            proj, reduced = gram_reduction(g_train)  # z(x) V = (z(x) Z^T) U S^-1
            model = fit_reduced(reduced.float(), y_train, len(tasks), pc.n_permutations, seed + c,
                                cc.l2, cc.max_iter, cc.accelerator, logger, tag=f"classifier/chain{c}_{kind}")
            with torch.no_grad():
                logits = model.head((g_test @ proj).float())  # (H, N_test, T)
            base = {"chain": c, "normalized": normalized, "feature_dim": int(dims[c - 1]), "alpha": pc.alpha}
            if "classification" in pc.protocols:
                accs = (logits.argmax(-1) == y_test).float().mean(1).numpy()
                report.append(_row("classification", base, float(accs[0]), len(y_test), accs[1:], pc))
            if do_retrieval:
                with torch.no_grad():
                    reps = model.head((g_unseen @ proj).float())  # (H, N_unseen, T): the weight representation
                curves = [cmc_curve(distances(r[q_idx], r[g_idx], pc.metric), q_lab, g_lab, pc.max_rank)
                          for r in reps]
                cmcs[(c, kind)] = curves[0]
                row = _row("retrieval", base, float(curves[0][0]), len(q_idx),
                           np.array([cv[0] for cv in curves[1:]]), pc)
                row["rank5"] = float(curves[0][min(4, len(curves[0]) - 1)])
                report.append(row)
            bar.update(1)
    bar.close()
    meta = {"zoo_dir": str(zoo_dir), "eval_zoo_dir": str(eval_zoo_dir or zoo_dir),
            "nets": len(train_zoo.rows), "diverged_excluded": div_a + (div_b if eval_zoo is not train_zoo else 0),
            "training_tasks": len(tasks), "unseen_tasks": len({r["task"] for r in unseen}),
            "train_seeds_per_task": n_train, "test_nets": len(y_test),
            "queries": len(q_idx) if do_retrieval else 0, "gallery": len(g_idx) if do_retrieval else 0,
            "chance_classification": 1 / len(tasks),
            "features": {"normalized": "Gram G_l = C_l C_l^T (exact, or of the sketched S C_l), upper triangle"
                                       + (" (homogeneous bias)" if co.bias else "")
                                       + (", divided by ||G_l||_F" if co.scale == "fro" else ""),
                         "raw": "layer weight(s) flattened",
                         "options": co.as_dict(),
                         "chains": plan_a},
            "batchnorm": {"invariant": "BN-absorbed channel scale removed (unit columns), gamma folded in",
                          "fold": "folded into the next weight layer (eval statistics)",
                          "ignore": "ignored by the chain (as in the paper)"}[co.bn]}
    return {"rows": report, "cmc": cmcs, "meta": meta}


def _row(protocol: str, base: dict, acc: float, n: int, null: np.ndarray, pc: ProtocolConfig) -> dict:
    err = 1.0 - acc
    lo, hi = clopper_pearson(int(round(err * n)), n, pc.confidence)
    return {"protocol": protocol, **base, "accuracy": acc, "error": err, "decision": decide(err, pc.alpha),
            "n": n, "error_ci_low": lo, "error_ci_high": hi,
            "decision_ci": "accept" if hi < pc.alpha else "reject",
            "null_accuracy_mean": float(null.mean()) if null.size else None,
            "p_value": permutation_p_value(acc, null)}
