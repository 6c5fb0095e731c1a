"""Grams of standardized chain features, streamed from the zoo within a memory budget.

The weight classifier needs only inner products (htt/classifier.py): per chain, the Gram of the
standardized training features Z Z^T (N x N) and, for every other group of nets (test nets, unseen
nets), their inner products with the training nets z(x) Z^T. Both are built here from blocks of
nets small enough that two blocks' features fit ``budget_bytes``:

1. one pass over the training nets: per-feature mean and standard deviation (Chan's merge of
   per-block moments, float64);
2. Gram blocks Z_i Z_j^T for every pair of training blocks j <= i, and z(X_q) Z_i^T for every block
   q of the other groups, in float64.

When everything fits in one block each, every net is featurized once, as before; otherwise a
training block is featurized again for each block it pairs with (a paper-size zoo's raw layers, 6
MB per net, take ~10 blocks at the default 4 GB budget: ~5x the featurization, no memory wall).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from weightsim.htt.classifier import constant_to_one

# featurize(part, rows) -> per chain an (n, D_c) float tensor of the nets ``rows`` of group ``part``
Featurize = Callable[[int, list[dict]], list[Tensor]]
COLUMNS = 1 << 16  # float64 columns per matmul chunk: bounds the float64 copies of a block


@dataclass
class ChainGram:
    """One chain's Grams: dim D, the training Gram (N, N) and per other group (n_g, N), float64."""

    dim: int
    train: Tensor
    cross: list[Tensor]


def _moments(x: Tensor) -> tuple[int, Tensor, Tensor]:
    """(count, mean, sum of squared deviations) of the rows of x (n, D), float64."""
    x = x.double()
    mean = x.mean(0)
    return len(x), mean, (x - mean).pow(2).sum(0)


def _merge(a: tuple[int, Tensor, Tensor] | None, b: tuple[int, Tensor, Tensor]) -> tuple[int, Tensor, Tensor]:
    """Chan et al.'s pairwise update of (count, mean, M2)."""
    if a is None:
        return b
    (na, ma, qa), (nb, mb, qb) = a, b
    n = na + nb
    d = mb - ma
    return n, ma + d * (nb / n), qa + qb + d.pow(2) * (na * nb / n)


def standardizer(n: int, mean: Tensor, m2: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased std (as torch.std); a constant feature gets std 1 (its z is 0), as in
    classifier.standardization."""
    return mean, constant_to_one((m2 / max(1, n - 1)).sqrt())


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """a (n, D) @ b (m, D)^T in float64, COLUMNS columns at a time."""
    out = torch.zeros(len(a), len(b), dtype=torch.float64)
    for s in range(0, a.shape[1], COLUMNS):
        out += a[:, s:s + COLUMNS].double() @ b[:, s:s + COLUMNS].double().T
    return out


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(s, min(n, s + size)) for s in range(0, n, size)]


def chain_grams(groups: list[list[dict]], featurize: Featurize, budget_bytes: float,
                progress: Callable[[str], None] | None = None) -> list[ChainGram]:
    """Per chain, the Grams of group 0 (the training nets) and its cross-Grams with groups 1..

    groups: rows of nets per group (group 0 must not be empty); featurize(g, rows) the features of
    rows of group g. Rows are featurized in the order given (callers pass file order).
    """
    if not groups or not groups[0]:
        raise ValueError("chain_grams needs training nets (group 0)")
    first = featurize(0, groups[0][:1])
    block = block_size(sum(f.shape[1] for f in first) * 4, budget_bytes)
    train = _blocks(len(groups[0]), block)
    cache: dict[tuple[int, int], list[Tensor]] = {}

    def feats(g: int, b: slice, keep: bool = False) -> list[Tensor]:
        key = (g, b.start)
        if key in cache:
            return cache[key]
        out = [f.float() for f in featurize(g, groups[g][b])]
        if keep:
            cache.clear()
            cache[key] = out
        return out

    # pass 1: standardization of the training features
    moments: list = [None] * len(first)
    for i, b in enumerate(train):
        for c, f in enumerate(feats(0, b, keep=i == len(train) - 1)):
            moments[c] = _merge(moments[c], _moments(f))
    stand = [tuple(t.float() for t in standardizer(*m)) for m in moments]

    def z(fs: list[Tensor]) -> list[Tensor]:
        return [(f - m) / s for f, (m, s) in zip(fs, stand)]

    n = len(groups[0])
    grams = [ChainGram(int(f.shape[1]), torch.zeros(n, n, dtype=torch.float64),
                       [torch.zeros(len(g), n, dtype=torch.float64) for g in groups[1:]]) for f in first]
    other = [(g, _blocks(len(groups[g]), block)) for g in range(1, len(groups)) if groups[g]]
    steps = len(train) * (len(train) + 1) // 2 + len(train) * sum(len(bs) for _, bs in other)
    done = 0
    # pass 2: Gram blocks (train x train, lower triangle mirrored) and cross blocks
    for i, bi in enumerate(train):
        zi = z(feats(0, bi, keep=True))
        for bj in train[:i + 1]:
            zj = zi if bj == bi else z(feats(0, bj))
            for c, gr in enumerate(grams):
                blk = _dot(zi[c], zj[c])
                gr.train[bi, bj] = blk
                gr.train[bj, bi] = blk.T
            done += 1
        for g, blocks in other:
            for bq in blocks:
                zq = z(feats(g, bq))
                for c, gr in enumerate(grams):
                    gr.cross[g - 1][bq, bi] = _dot(zq[c], zi[c])
                done += 1
        if progress and len(train) > 1:
            progress(f"Gram blocks {done}/{steps} ({len(train)} training blocks of {block} nets)")
    return grams


def block_size(per_net_bytes: int, budget_bytes: float) -> int:
    """Nets per block for float32 features of ``per_net_bytes`` each: two blocks are held at once,
    each with its standardized copy, within ``budget_bytes``."""
    return max(1, math.floor(budget_bytes // (4 * per_net_bytes)))
