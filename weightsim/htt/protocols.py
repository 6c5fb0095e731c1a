"""The classification and retrieval protocols, and the HTT decision."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from weightsim.errors import ConfigError


def split_seeds(rows: list[dict], n_first: int, what: str = "training seeds", rest: str = "test seed",
                knob: str = "protocol.train_seeds / protocol.train_fraction") -> tuple[list[int], list[int]]:
    """Fixed per-task split of a task's seeds: the n_first lowest seeds, and the rest.
    Returns indices into ``rows``; ``what``, ``rest`` and ``knob`` name the split in its error."""
    by_task: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_task.setdefault(r["task"], []).append(i)
    first, others = [], []
    for task, idx in sorted(by_task.items()):
        idx = sorted(idx, key=lambda i: rows[i]["seed"])
        if n_first >= len(idx):
            raise ConfigError(f"protocol asks for {n_first} {what} per task, but task {task} has only "
                              f"{len(idx)} usable nets (need at least one {rest}): lower {knob} or raise zoo.seeds")
        first += idx[:n_first]
        others += idx[n_first:]
    return first, others


def cmc_curve(dist: Tensor, query_labels: Tensor, gallery_labels: Tensor, max_rank: int | None = None) -> np.ndarray:
    """Cumulative matching characteristic: entry k-1 = share of queries whose k nearest gallery
    items contain one of the query's label. dist: (Q, G); labels (Q,), (G,). Ties are broken by
    gallery order (stable sort)."""
    max_rank = max_rank or dist.shape[1]
    order = torch.argsort(dist, dim=1, stable=True)
    match = gallery_labels[order] == query_labels[:, None]  # (Q, G)
    first = torch.where(match.any(1), match.float().argmax(1), torch.full_like(query_labels, dist.shape[1]))
    ranks = torch.arange(1, max_rank + 1)
    return (first[:, None] < ranks[None]).float().mean(0).numpy()


def retrieval_split(rows: list[dict], queries: int) -> tuple[list[int], list[int]]:
    """Per unseen task: the ``queries`` lowest seeds are queries, the rest join the gallery."""
    return split_seeds(rows, queries, "queries", "gallery seed", "protocol.queries")


def distances(a: Tensor, b: Tensor, metric: str) -> Tensor:
    """(Q, D), (G, D) -> (Q, G) distances between weight representations."""
    if metric == "euclidean":
        return torch.cdist(a, b)
    if metric == "cosine":
        a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
        return 1 - a @ b.T
    raise ConfigError(f"unknown protocol.metric '{metric}': choose euclidean or cosine")


def decide(error: float, alpha: float) -> str:
    """HTT decision for one chain: accept H0 (the seeds' solutions are one class) when error < alpha."""
    if not 0 < alpha < 1:
        raise ConfigError(f"protocol.alpha={alpha} must lie in (0, 1)")
    return "accept" if error < alpha else "reject"
