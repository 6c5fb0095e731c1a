"""The protocols on one chain and one split: the weight classifier on a feature measure's Grams
(``evaluate_chain``) or k-NN on a distance measure's distances (``evaluate_distances``), each
giving an ``Outcome`` per protocol."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from weightsim.htt.classifier import fit_reduced, gram_reduction
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
from weightsim.htt.protocols import (accuracy, cmc_curve, distances, effect_size, knn_classify, knn_null,
                                     retrieval_null)
from weightsim.htt.study import Split, Study
from weightsim.trainer import TrainerConfig


@dataclass
class Outcome:
    """One protocol on one chain and split: accuracy (top-1 / rank-1) over n tested nets, the
    effect size, the null statistics (repeat 0 only) and the CMC curve (retrieval)."""

    accuracy: float
    n: int
    effect: float
    null: Tensor | None = None
    cmc: np.ndarray | None = None
    objective: float | None = None  # the weight classifier's final objective per net and head (feature measures)


def evaluate_chain(g_train: Tensor, g_test: Tensor, g_unseen: Tensor, split: Split, study: Study, pc: ProtocolConfig,
                   cc: ClassifierConfig, seed: int, device: torch.device | str = "cpu",
                   tc: TrainerConfig | None = None) -> dict[str, Outcome]:
    """Fit the weight classifier on the training Gram (N, N) and run the protocols: g_test (M, N) and
    g_unseen (U, N) are the other nets' inner products with the training nets. The null (label-
    permutation heads, gallery-label permutations) is computed on repeat 0 only."""
    first = split.repeat == 0
    proj, reduced = gram_reduction(g_train)  # z(x) V = (z(x) Z^T) U S^-1
    n_null = pc.n_permutations if first and "classification" in pc.protocols else 0
    model = fit_reduced(reduced.float(), split.y_train, len(study.tasks), n_null, seed, cc.l2, cc.max_iter,
                        "gpu" if torch.device(device).type == "cuda" else "cpu", tc)
    out = {}
    with torch.no_grad():
        if "classification" in pc.protocols:
            logits = model.head((g_test @ proj).float())  # (H, M, T): head 0 true labels, 1.. shuffled
            acc = accuracy(logits, split.y_test)
            out["classification"] = Outcome(float(acc[0]), len(split.y_test),
                                            effect_size(distances(logits[0], logits[0], pc.metric), split.y_test),
                                            acc[1:] if first else None, objective=model.final_objective)
        if study.unseen:
            rep = model.head((g_unseen @ proj).float())[0]  # (U, T): the weight representation
            labels = torch.tensor([r["task"] for r in study.unseen])
            q, g = split.queries, split.gallery
            dist = distances(rep[q], rep[g], pc.metric)
            curve = cmc_curve(dist, labels[q], labels[g], pc.max_rank)
            null = retrieval_null(dist, labels[q], labels[g], pc.retrieval_permutations, seed) if first else None
            out["retrieval"] = Outcome(float(curve[0]), len(q), effect_size(distances(rep, rep, pc.metric), labels),
                                       null, curve, objective=model.final_objective)
    return out


def evaluate_distances(d_test_train: Tensor, d_test: Tensor, d_unseen: Tensor, split: Split, study: Study,
                       pc: ProtocolConfig, seed: int) -> dict[str, Outcome]:
    """The protocols on a distance measure's chain: d_test_train (M, N) from the test nets to the
    training nets, d_test (M, M) among the test nets, d_unseen (U, U) among the unseen nets.
    Classification is k-nearest-neighbour (its null: the training labels shuffled); retrieval and
    the effect size read the distances directly, as for the classifier's logits."""
    first, out = split.repeat == 0, {}
    if "classification" in pc.protocols:
        pred = knn_classify(d_test_train, split.y_train, pc.knn)
        null = knn_null(d_test_train, split.y_train, split.y_test, pc.n_permutations, pc.knn, seed) \
            if first and pc.n_permutations else None
        out["classification"] = Outcome(float((pred == split.y_test).double().mean()), len(split.y_test),
                                        effect_size(d_test, split.y_test), null)
    if study.unseen:
        labels = torch.tensor([r["task"] for r in study.unseen])
        q, g = split.queries, split.gallery
        dist = d_unseen[q][:, g]
        curve = cmc_curve(dist, labels[q], labels[g], pc.max_rank)
        null = retrieval_null(dist, labels[q], labels[g], pc.retrieval_permutations, seed) if first else None
        out["retrieval"] = Outcome(float(curve[0]), len(q), effect_size(d_unseen, labels), null, curve)
    return out
