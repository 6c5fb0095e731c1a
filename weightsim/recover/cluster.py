"""Clustering one hidden layer's pooled student neurons (Expand-and-Cluster, step 2).

feats (M, D): canonical [w; b] of every neuron of every student (symmetry.py); owner (M,): its student.
Average-linkage L2 clustering; the cut keeps the most clusters that have >= int(gamma N) members
(the published rule, computed in one pass over the linkage; ``cut="stable"`` instead cuts where the
count of big clusters stays the same over the longest span of heights); clusters whose members disagree in
direction (median pairwise cosine distance > 1 - cos beta) are dropped. The ``robust`` preset also
drops neurons whose outgoing weights are ~0 before clustering (they carry no function and form junk
clusters that move the cut) and merges kept clusters whose mean directions are within beta (a
teacher neuron split in two big clusters, or across the sign convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.cluster.hierarchy import linkage as scipy_linkage
from torch import Tensor

from weightsim.errors import warn

PRESETS = ("reference", "robust")


@dataclass
class Clusters:
    """members[c]: indices into the pooled neurons of kept cluster c (in its own sign convention:
    align[m] = +-1 turns neuron m towards its cluster's first member). linkage: scipy's (M'-1, 4)
    matrix over the neurons in ``used`` (M',); cut: the cut height; counts[i]: clusters with >= min_size
    members after merge i; log: what was dropped and why."""

    members: list[np.ndarray]
    align: np.ndarray
    used: np.ndarray
    linkage: np.ndarray
    cut: float
    min_size: int
    counts: np.ndarray
    median_cos_dist: list[float]
    log: dict = field(default_factory=dict)


def count_big_clusters(Z: np.ndarray, n: int, min_size: int) -> np.ndarray:
    """counts[i]: number of clusters with >= min_size leaves after merges 0..i of linkage Z (n leaves).
    One pass: a merge of clusters of sizes p and q changes the count by [p+q >= k] - [p >= k] - [q >= k]."""
    size = np.ones(2 * n - 1, dtype=np.int64)
    counts = np.zeros(len(Z), dtype=np.int64)
    big = 0
    for i, (a, b) in enumerate(Z[:, :2].astype(np.int64)):
        p, q = size[a], size[b]
        size[n + i] = p + q
        big += int(p + q >= min_size) - int(p >= min_size) - int(q >= min_size)
        counts[i] = big
    return counts


def cut_index(counts: np.ndarray, heights: np.ndarray | None = None) -> int:
    """The merge after which to cut. Published rule (heights None): the end of the first run of merges
    attaining the maximum count. ``stable`` (with the merge heights): the end of the run of equal
    count >= 1 that lasts longest in log height (the largest ratio from its first merge to the merge
    that ends it; absolute spans would favour the coarse partitions at the top)."""
    runs, i = [], 0  # (first, last) merge of each run of equal counts
    while i < len(counts):
        j = i
        while j + 1 < len(counts) and counts[j + 1] == counts[i]:
            j += 1
        runs.append((i, j))
        i = j + 1
    if heights is None:
        return next(j for i, j in runs if counts[i] == counts.max())
    h = np.log(np.maximum(heights, 1e-12 * max(heights.max(), 1e-300)))  # spans compared as height ratios
    life = lambda r: (h[r[1] + 1] if r[1] + 1 < len(h) else h[-1]) - h[r[0]]  # noqa: E731
    return max((r for r in runs if counts[r[0]] >= 1), key=life, default=runs[-1])[1]


def labels_after(Z: np.ndarray, n: int, j: int) -> np.ndarray:
    """(n,) cluster label (the root node id) of each leaf after merges 0..j."""
    parent = np.arange(2 * n - 1)
    for i in range(j + 1):
        a, b = Z[i, :2].astype(np.int64)
        parent[a] = parent[b] = n + i

    def root(v: int) -> int:
        while parent[v] != v:
            v = parent[v]
        return v
    return np.array([root(v) for v in range(n)])


def cos_matrix(f: np.ndarray) -> np.ndarray:
    u = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-300)
    return u @ u.T


def cluster_layer(feats: Tensor, owner: Tensor, n_students: int, out_norm: Tensor, gamma: float = 0.5,
                  beta: float = math.pi / 6, preset: str = "robust", drop_below: float = 1e-3,
                  weights: Tensor | None = None, cut: str = "first") -> Clusters:
    """Cluster the pooled neurons of one layer. feats (M, D), owner (M,) student ids in [0, n_students),
    out_norm (M,) each neuron's weight in its student's output (ec.importance; used by ``robust`` to drop
    neurons with out_norm < drop_below * the largest of their student). weights (M, D): the [w; b] whose
    directions ``robust`` compares to merge clusters, when feats are another view of them (default feats).
    cut: "first" (the published rule) or "stable" (``cut_index``)."""
    f = feats.double().cpu().numpy()
    own = owner.cpu().numpy()
    a = out_norm.double().cpu().numpy()
    M = len(f)
    min_size = int(gamma * n_students)  # the published rule keeps clusters of >= int(gamma N) members
    used = np.arange(M)
    log: dict = {"neurons": M}
    top = np.zeros(n_students)
    np.maximum.at(top, own, a)
    rel = a / np.maximum(top[own], 1e-300)  # importance relative to the student's largest
    if preset == "robust":
        used = np.flatnonzero(a >= drop_below * top[own])
        log["dropped_zero_outgoing"] = int(M - len(used))
    if len(used) < 2:
        return Clusters([], np.ones(M), used, np.zeros((0, 4)), 0.0, min_size, np.zeros(0, dtype=np.int64), [], log)
    if len(used) > 5000:
        warn(f"clustering {len(used)} neurons: pairwise distances take {len(used) ** 2 * 4 / 1e6:.0f} MB; "
             f"fewer students or a smaller width factor keep it small")
    Z = scipy_linkage(f[used], method="average", metric="euclidean")
    counts = count_big_clusters(Z, len(used), min_size)
    j = cut_index(counts, Z[:, 2] if cut == "stable" else None)
    labels = labels_after(Z, len(used), j)
    groups = [used[labels == lab] for lab in np.unique(labels)]
    groups = [g for g in groups if len(g) >= min_size]
    if preset == "robust":  # neurons a cluster absorbed on its way up to the cut are not its neuron
        cores = [trim(f, g, min_size) for g in groups]
        log["trimmed"] = int(sum(len(g) - len(k) for g, k in zip(groups, cores)))
        groups = [k for k in cores if len(k) >= min_size]
    max_cos_dist = 1 - math.cos(beta)
    kept, medians = [], []
    for g in groups:
        c = cos_matrix(f[g])
        med = float(np.median(1 - c[np.triu_indices(len(g), 1)]))
        if med <= max_cos_dist:
            kept.append(g)
            medians.append(med)
    log["angular_dropped"] = len(groups) - len(kept)
    align = np.ones(M)
    if preset == "robust" and len(kept) > 1:
        w = f if weights is None else weights.double().cpu().numpy()
        kept, medians, log["merged"] = merge_aligned(w, kept, medians, beta)
    for g in kept:  # each member turned towards its cluster's first member
        align[g] = np.where(f[g] @ f[g[0]] < 0, -1.0, 1.0)
    log["kept"] = [{"members": len(g), "students": len(set(own[g].tolist())), "median_cos_dist": m,
                    "median_rel_importance": float(np.median(rel[g]))} for g, m in zip(kept, medians)]
    return Clusters(kept, align, used, Z, float(Z[j, 2]), min_size, counts, medians, log)


def trim(f: np.ndarray, g: np.ndarray, k: int, far: float = 10.0, floor: float = 1e-5) -> np.ndarray:
    """The core of cluster g (indices into f (M, D)), k = int(gamma N) its least size: in d = 1 - |cos|,
    the core's centre is the member with the smallest radius r_k holding k members (its k-th nearest,
    itself included), and the core is every member within max(far x r_k, floor) of it. The published
    cut lies below the first merge of two big clusters, often far above the heights at which the
    teacher's copies gather; on the way up a big cluster absorbs leftover neurons, which pull its
    direction, its angular spread and its collapsed neuron off the teacher's (and can outnumber its copies)."""
    d = 1 - np.abs(cos_matrix(f[g]))
    rk = np.sort(d, 1)[:, min(k, len(g)) - 1]
    c = int(np.argmin(rk))
    return g[d[c] <= max(far * float(rk[c]), floor)]


def merge_aligned(f: np.ndarray, groups: list[np.ndarray], medians: list[float], beta: float
                  ) -> tuple[list[np.ndarray], list[float], int]:
    """Union the clusters whose mean directions are as close as their own members are, up to sign:
    1 - |cos| <= min(1 - cos beta, 10 x the larger median pairwise cosine distance of the two (>= 1e-6)).
    Pieces of one neuron (split by the linkage or by the sign convention) lie that close; two distinct
    neurons less than beta apart stay apart when their clusters are tight. Returns the merged clusters,
    their medians (the largest part's) and how many merges."""
    means = []
    for g in groups:
        s = np.where(f[g] @ f[g[0]] < 0, -1.0, 1.0)
        m = (f[g] * s[:, None]).mean(0)
        means.append(m / max(np.linalg.norm(m), 1e-300))
    means = np.array(means)
    spread = np.maximum(np.maximum.outer(medians, medians), 1e-6)
    close = 1 - np.abs(means @ means.T) <= np.minimum(1 - math.cos(beta), 10 * spread)
    parent = list(range(len(groups)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i
    for i, k in zip(*np.nonzero(np.triu(close, 1))):
        parent[root(int(i))] = root(int(k))
    roots = sorted({root(i) for i in range(len(groups))})
    merged = [np.concatenate([groups[i] for i in range(len(groups)) if root(i) == r]) for r in roots]
    med = [max((medians[i] for i in range(len(groups)) if root(i) == r)) for r in roots]
    return merged, med, len(groups) - len(roots)


