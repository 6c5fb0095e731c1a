"""The two HTT protocols, their nulls, the effect size and the decision, on any measure.

Everything here takes either per-net representations (a weight classifier's logits) or a net x net
distance matrix, so a measure that only yields distances (activation CKA, subspace match) is tested
exactly like the chain features:

- ``accuracy(logits, y)``: top-1 of classifier heads (torchmetrics' multiclass accuracy);
- ``knn_classify(dist, train_labels, k)``: classification from distances, the majority task of the
  k nearest training nets (ties to the task whose members are nearer); ``knn_null`` its
  label-permutation null (the training nets' task labels shuffled);
- ``cmc_curve(dist, q, g)``: retrieval, hit rate at k (torchmetrics) for k = 1..max_rank;
  ``retrieval_null`` the rank-1 of the same distances with the gallery's task labels shuffled;
- ``effect_size(dist, labels)``: mean between-task over mean within-task distance;
- ``decide``: the paper's decision, error < alpha.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from weightsim.errors import ConfigError
from weightsim.measures.base import pairwise_distances


def split_seeds(rows: list[dict], n_first: int, what: str = "training seeds", rest: str = "test seed",
                knob: str = "protocol.train_seeds / protocol.train_fraction",
                key: Callable[[dict], object] | None = None) -> tuple[list[int], list[int]]:
    """Per task, the n_first seeds first in ``key`` order (default: the lowest seeds, the paper's
    fixed split) and the rest. Returns indices into ``rows``; ``what``, ``rest`` and ``knob`` name
    the split in its error."""
    key = key or (lambda r: r["seed"])
    by_task: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_task.setdefault(r["task"], []).append(i)
    first, others = [], []
    for task, idx in sorted(by_task.items()):
        idx = sorted(idx, key=lambda i: (key(rows[i]), rows[i]["seed"]))
        if n_first >= len(idx):
            raise ConfigError(f"protocol asks for {n_first} {what} per task, but task {task} has only "
                              f"{len(idx)} usable nets (need at least one {rest}): lower {knob} or raise zoo.seeds "
                              f"(or, when diverged nets left it short, protocol.short_tasks=drop leaves it out)")
        first += idx[:n_first]
        others += idx[n_first:]
    return first, others


def random_order(seed: int, repeat: int) -> Callable[[dict], float]:
    """A split key for repeat ``repeat`` > 0: a seeded uniform number per (task, seed), the same in
    every zoo, so a cross-network run trains and tests on complementary seeds as repeat 0 does."""
    return lambda r: float(np.random.default_rng([seed, repeat, r["task"], r["seed"]]).random())


def retrieval_split(rows: list[dict], queries: int, key: Callable[[dict], object] | None = None
                    ) -> tuple[list[int], list[int]]:
    """Per unseen task: the ``queries`` first seeds (default: lowest) are queries, the rest the gallery."""
    return split_seeds(rows, queries, "queries", "gallery seed", "protocol.queries", key)


def distances(a: Tensor, b: Tensor, metric: str) -> Tensor:
    """(Q, D), (G, D) -> (Q, G) distances between representations (``protocol.metric``)."""
    return pairwise_distances(a, b, metric)


# -- classification ------------------------------------------------------------------------------
def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Top-1 accuracy of each head: logits (H, N, C), y (N,) -> (H,). Ties go to the lowest class."""
    from torchmetrics.functional.classification import multiclass_accuracy  # (torchmetrics: seconds to import,
    # here, where it is used, so the CLI checks protocol settings without it)

    h, n, c = logits.shape
    return multiclass_accuracy(logits.transpose(1, 2), y.expand(h, n), num_classes=c, average="micro",
                               multidim_average="samplewise")


def knn_classify(dist: Tensor, train_labels: Tensor, k: int = 1) -> Tensor:
    """Classification from distances: dist (M, N) from M test nets to N training nets, labels
    (N,) or (P, N) (P labelings at once) -> predicted labels (M,) or (P, M). The majority label of
    the k nearest training nets (stable order); among tied counts, the label whose members rank
    nearer: the j-th nearest (j = 0..k-1) votes 1 + (k - j) / k^2, and these extras sum to < 1
    for k > 1, so they only break ties."""
    k = min(k, dist.shape[1])
    nearest = torch.argsort(dist, dim=1, stable=True)[:, :k]  # (M, k)
    labels = train_labels if train_labels.dim() == 2 else train_labels[None]
    votes = torch.nn.functional.one_hot(labels[:, nearest], int(labels.max()) + 1).double()  # (P, M, k, C)
    weight = 1 + (k - torch.arange(k, dtype=torch.float64)) / k ** 2
    pred = (votes * weight[:, None]).sum(2).argmax(-1)  # (P, M)
    return pred if train_labels.dim() == 2 else pred[0]


def shuffled(labels: Tensor, n: int, seed: int) -> Tensor:
    """(n, L): n seeded permutations of ``labels`` (L,)."""
    g = torch.Generator().manual_seed(seed)
    return labels[torch.argsort(torch.rand(n, len(labels), generator=g), dim=1)]


def knn_null(dist: Tensor, train_labels: Tensor, test_labels: Tensor, n_permutations: int, k: int = 1,
             seed: int = 0) -> Tensor:
    """Label-permutation null of ``knn_classify``: its accuracy with the training nets' labels
    shuffled, (n_permutations,)."""
    pred = knn_classify(dist, shuffled(train_labels, n_permutations, seed), k)  # (P, M)
    return (pred == test_labels[None]).double().mean(1)


# -- retrieval -----------------------------------------------------------------------------------
def cmc_curve(dist: Tensor, query_labels: Tensor, gallery_labels: Tensor, max_rank: int | None = None) -> np.ndarray:
    """Cumulative matching characteristic: entry k-1 = hit rate at k, the share of queries whose k
    nearest gallery items contain one of the query's label (torchmetrics' RetrievalHitRate; a query
    without a match in the gallery scores 0). dist: (Q, G); labels (Q,), (G,). Ties are broken by
    gallery order: torchmetrics sorts unstably, so it gets each item's rank in a stable sort."""
    from torchmetrics.retrieval import RetrievalHitRate  # (imported where used, as in ``accuracy``)

    q, g = dist.shape
    max_rank = min(max_rank or g, g)
    rank = torch.argsort(torch.argsort(dist, dim=1, stable=True), dim=1)  # (Q, G): 0 = nearest
    preds, target = -rank.flatten().double(), (gallery_labels[None] == query_labels[:, None]).flatten()
    indexes = torch.arange(q).repeat_interleave(g)
    return np.array([float(RetrievalHitRate(top_k=k, empty_target_action="neg")(preds, target, indexes=indexes))
                     for k in range(1, max_rank + 1)])


def retrieval_null(dist: Tensor, query_labels: Tensor, gallery_labels: Tensor, n_permutations: int,
                   seed: int = 0) -> Tensor:
    """Chance null of retrieval: rank-1 of the same distances with the gallery's task labels
    shuffled (n_permutations,). One distance matrix, so thousands of permutations cost nothing."""
    nearest = torch.argsort(dist, dim=1, stable=True)[:, 0]  # (Q,)
    perm = shuffled(gallery_labels, n_permutations, seed)  # (P, G)
    return (perm[:, nearest] == query_labels[None]).double().mean(1)


# -- effect size and decision --------------------------------------------------------------------
def effect_size(dist: Tensor, labels: Tensor) -> float:
    """Mean distance between nets of different tasks over mean distance between distinct nets of
    the same task, dist (N, N) symmetric, labels (N,). Range [0, inf): 1 = tasks no farther apart
    than seeds of one task, larger = tasks separate; inf when every within-task distance is 0; nan
    without two nets of one task or without two tasks (undefined)."""
    same = labels[:, None] == labels[None]
    off = ~torch.eye(len(labels), dtype=torch.bool)
    within, between = dist[same & off], dist[~same]
    if within.numel() == 0 or between.numel() == 0:
        return float("nan")
    w = float(within.double().mean())
    return float(between.double().mean()) / w if w > 0 else float("inf")


def decide(error: float, alpha: float) -> str:
    """HTT decision for one chain: accept H0 (the seeds' solutions are one class) when error < alpha."""
    if not 0 < alpha < 1:
        raise ConfigError(f"protocol.alpha={alpha} must lie in (0, 1)")
    return "accept" if error < alpha else "reject"
