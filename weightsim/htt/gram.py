"""Grams of standardized features for every seed split at once, from one pass over the nets.

The weight classifier needs only inner products (htt/classifier.py): per split r and feature set
k (a measure's chain), the inner products of every net's standardized features with those of the
split's training nets, z_r(x_i) . z_r(x_t), where z_r standardizes with the mean and std of split
r's training nets. Everything here works on blocks of nets, each read and featurized by the caller
(``featurize(block)``), so that every repeat and every measure share one read of the zoo:

1. moments: per block, its features' per-split moments of the split's training nets, merged over
   blocks (Chan's update of count, mean and M2, merged in float64);
2. Grams: for every pair (row block i, column block j) and every split, the block's standardized
   features times those of the split's training nets in block j. The features are centred once by
   split 0's training mean c (x' = x - c); with d_r = mean_r - c, which is small,
   z_r(x_i) . z_r(x_t) = x'_i . w_t - d_r . w_t with w_t = (x'_t - d_r) / std_r^2, so only the
   training nets are rescaled per split, never a whole block.

When all features fit (n <= 2 blocks of ``block_size``), every block is featurized once and held:
one read of every net for the whole HTT run, and per feature set and split one gather of the split's
training nets gives both its moments and its w_t (``_held_grams``). Otherwise a column block is held
and a row block is featurized again for each column block it meets (no memory wall, more
featurization).

Precision: the standardization and the products run in each feature set's ``dtype`` (float32 for
raw layers, whose D reaches 10^6: the Gram dominates HTT's cost; float64 elsewhere), in chunks of
COLUMNS features summed in float64; the Grams are returned in float64, on the CPU; the work runs
on the features' device.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from weightsim.htt.classifier import constant_to_one

# featurize(block) -> per feature set an (len(block), D_k) float tensor of the nets ``block``
Featurize = Callable[[list[int]], list[Tensor]]
Moments = tuple[int, Tensor, Tensor]  # (count, mean, sum of squared deviations), float64
COLUMNS = 1 << 16  # feature columns per product chunk (chunks are summed in float64)


def _moments(x: Tensor, dtype: torch.dtype) -> Moments:
    """(count, mean, M2) of the rows of x (n, D), reduced in ``dtype``, returned in float64."""
    x = x.to(dtype)
    mean = x.mean(0)
    return len(x), mean.double(), (x - mean).pow(2).sum(0).double()


def _merge(a: Moments | None, b: Moments) -> Moments:
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


def block_size(per_net_bytes: int, budget_bytes: float, per_net_read_bytes: int = 0, fixed_bytes: float = 0) -> int:
    """Nets per block for features of ``per_net_bytes`` each, so that what the streamed pass holds
    at its peak fits ``budget_bytes``: three blocks of features (the held column block, a row block
    and its centred copy) and a row block's weights as read, ``per_net_read_bytes`` per net, twice
    (the files' tensors and the stacked block), besides ``fixed_bytes`` (the Grams themselves: at
    least a quarter of the budget is left to the blocks whatever they take)."""
    usable = max(budget_bytes - fixed_bytes, budget_bytes / 4)
    return max(1, math.floor(usable // (3 * per_net_bytes + 2 * per_net_read_bytes)))


def blocks_of(groups: list[int], size: int) -> list[list[int]]:
    """Consecutive nets of one group (one zoo file order) cut into blocks of at most ``size``.
    groups: per net, its group id (nets of one group are consecutive)."""
    out: list[list[int]] = []
    for i, g in enumerate(groups):
        if out and groups[out[-1][0]] == g and len(out[-1]) < size:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def split_grams(n: int, blocks: list[list[int]], trains: list[list[int]], featurize: Featurize,
                dtypes: list[torch.dtype], hold_all: bool, device: torch.device | str = "cpu",
                progress: Callable[[str], None] | None = None) -> list[list[Tensor]]:
    """Per split r and feature set k, the (n, len(trains[r])) float64 CPU matrix
    G[r][k][i, t] = z_r(x_i) . z_r(x_trains[r][t]) over every net i.

    blocks: the nets (0..n-1) in the blocks ``featurize`` reads; trains: per split, the training
    nets (its columns, in this order); dtypes: per feature set, the precision of the products;
    hold_all: keep every block's features (each featurized once), else only the column block's.
    """
    if not trains or any(not t for t in trains):
        raise ValueError("split_grams needs training nets in every split")
    if hold_all:
        return _held_grams(n, blocks, trains, featurize, dtypes)
    center: list[Tensor] | None = None  # after pass 1: split 0's training mean c per feature set

    def feats(b: int) -> list[Tensor]:
        """Block b's features, minus ``center`` once it is known."""
        out = featurize(blocks[b])
        for k, c in enumerate(center or []):
            out[k] = out[k] - c  # each uncentred tensor goes as soon as its centred copy exists
        return out

    where = {net: (b, i) for b, blk in enumerate(blocks) for i, net in enumerate(blk)}
    # per split and block: positions in the block of the split's training nets, and their columns
    local = [[[] for _ in blocks] for _ in trains]
    column = [[[] for _ in blocks] for _ in trains]
    for r, train in enumerate(trains):
        for t, net in enumerate(train):
            b, i = where[net]
            local[r][b].append(i)
            column[r][b].append(t)
    col_blocks = [b for b in range(len(blocks)) if any(local[r][b] for r in range(len(trains)))]

    # pass 1: the moments of every split's training nets
    moments: list[list[Moments | None]] = [[None] * len(dtypes) for _ in trains]
    for b in col_blocks:
        fs = feats(b)
        for r in range(len(trains)):
            if local[r][b]:
                idx = torch.tensor(local[r][b], device=fs[0].device)
                for k, (f, dt) in enumerate(zip(fs, dtypes)):
                    moments[r][k] = _merge(moments[r][k], _moments(f.index_select(0, idx), dt))
    # the products run on features centred by c, x' = x - c, with d_r = mean_r - c small:
    #   z_r(x_i) . z_r(x_t) = x'_i . w_t - d_r . w_t,   w_t = (x'_t - d_r) / std_r^2
    # so a row block is never standardized (copied) per split, only the split's training nets are
    stand = [[standardizer(*m) for m in ms] for ms in moments]
    center = [m.to(device, torch.float32) for m, _ in stand[0]]
    shift = [[((m - c.double()).to(device, dt), s.to(device, dt).pow(-2)) for (m, s), c, dt in zip(ms, center, dtypes)]
             for ms in stand]

    grams = [[torch.zeros(n, len(t), dtype=torch.float64) for _ in dtypes] for t in trains]
    steps, done = len(col_blocks) * len(blocks), 0
    # pass 2: Gram blocks, every row block against the training nets of every column block
    for j in col_blocks:
        fj = feats(j)
        for i in range(len(blocks)):
            fi = fj if i == j else feats(i)
            rows = torch.tensor(blocks[i])
            for k, dt in enumerate(dtypes):
                xi = fi[k].to(dt)
                for r in range(len(trains)):
                    if not local[r][j]:
                        continue
                    d, inv_var = shift[r][k]
                    cols = fj[k].index_select(0, torch.tensor(local[r][j], device=fj[k].device))
                    w = (cols.to(dt) - d) * inv_var  # (x'_t - d_r) / std_r^2
                    g = _dot(xi, w) - _dot(d[None], w)  # z_r(x_i) . z_r(x_t)
                    grams[r][k][rows[:, None], torch.tensor(column[r][j])] = g.cpu()
                    del w, cols
                del xi
            done += 1
            if progress and len(blocks) > 1:
                progress(f"Gram blocks {done}/{steps} ({len(blocks)} blocks)")
    return grams


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """a (n, D) @ b (m, D)^T in a's precision, COLUMNS columns at a time, the chunks summed in
    float64: a float32 sum over 10^6 terms would carry a relative error of ~1e-3, over 2^16 ~1e-5."""
    out = torch.zeros(len(a), len(b), dtype=torch.float64, device=a.device)
    for s in range(0, a.shape[1], COLUMNS):
        out += (a[:, s:s + COLUMNS] @ b[:, s:s + COLUMNS].T).double()
    return out


def _gather(feats: list[Tensor], blocks: list[list[int]], nets: list[int]) -> Tensor:
    """Rows ``nets`` (in this order) of the per-block features ``feats``: (len(nets), D)."""
    where = {net: (b, i) for b, blk in enumerate(blocks) for i, net in enumerate(blk)}
    pos = torch.tensor([sum(map(len, blocks[:where[t][0]])) + where[t][1] for t in nets])
    starts = [0]
    for blk in blocks:
        starts.append(starts[-1] + len(blk))
    parts = []
    for b, f in enumerate(feats):
        mine = ((pos >= starts[b]) & (pos < starts[b + 1])).nonzero().flatten()
        parts.append((mine, f.index_select(0, (pos[mine] - starts[b]).to(f.device))))
    out = feats[0].new_empty(len(nets), feats[0].shape[1])
    for mine, rows in parts:
        out[mine.to(out.device)] = rows
    return out


def _held_grams(n: int, blocks: list[list[int]], trains: list[list[int]], featurize: Featurize,
                dtypes: list[torch.dtype]) -> list[list[Tensor]]:
    """``split_grams`` with every block's features held: each block featurized once; per feature
    set and split one gather of the split's training nets gives its moments and its w_t."""
    feats = [featurize(b) for b in blocks]
    grams = [[torch.zeros(n, len(t), dtype=torch.float64) for _ in dtypes] for t in trains]
    for k, dt in enumerate(dtypes):
        for r, train in enumerate(trains):
            cols = _gather([f[k] for f in feats], blocks, train).to(dt)
            mean = cols.mean(0)  # of x' = x - c for r > 0: d_r
            if r == 0:  # centre every block by c = split 0's training mean, x' = x - c
                center = mean.to(feats[0][k].dtype)
                for f in feats:
                    f[k] = f[k] - center  # a new tensor: the caller's features are left as they are
                c = center.to(dt)
                cols -= c
                mean = mean - c  # d_0: 0 up to c's rounding
            cols -= mean
            std = constant_to_one(torch.linalg.vector_norm(cols, dim=0) / math.sqrt(max(1, len(train) - 1)))
            w = cols.div_(std.pow(2))  # w_t = (x'_t - d_r) / std_r^2
            dw = _dot(mean[None], w)  # d_r . w_t
            for blk, f in zip(blocks, feats):
                grams[r][k][torch.tensor(blk)] = (_dot(f[k].to(dt), w) - dw).cpu()
            del cols, w
    return grams
