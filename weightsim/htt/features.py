"""The feature measures' Grams: one pass over the nets featurizes every feature measure's chains
for every split and protocol at once (streamed in blocks within the feature budget, htt/gram.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from weightsim.htt.evidence import check_feature_spread
from weightsim.htt.gram import block_size, blocks_of, split_grams
from weightsim.htt.study import Split, Study
from weightsim.measures import Measure


@dataclass
class FeatureSet:
    """A feature measure and the chains of it HTT tests."""

    measure: Measure
    chains: list[int]
    dims: list[int]  # feature size per chain


def feature_grams(study: Study, splits: list[Split], sets: list[FeatureSet], budget_gb: float,
                  device: torch.device, progress=None) -> list[list[list[tuple[Tensor, Tensor, Tensor]]]]:
    """[set][chain][split] -> (g_train (N, N), g_test (M, N), g_unseen (U, N)): the Grams of the split's
    standardized features, rows in the split's order (htt/gram.py). Every net is read once for all
    measures, splits and protocols (more often only when the features exceed ``budget_gb``), in the
    order of its zoo's files, so each file is read once per pass."""
    zoos = [study.train_zoo] + ([study.eval_zoo] if study.cross else [])
    wanted = [study.seen_a, study.seen_b + study.unseen] if study.cross else [study.seen_a + study.unseen]
    nets: list[tuple[int, dict]] = []
    for z, rows in enumerate(wanted):
        nets += [(z, r) for r in sorted(rows, key=lambda r: (r["file"], r["index"]))]
    index = {(z, r["task"], r["seed"]): i for i, (z, r) in enumerate(nets)}
    a, b = 0, len(zoos) - 1  # the zoo of the training nets, of the tested nets
    spread: dict[tuple[str, int], tuple[float, float]] = {}  # (measure, chain) -> min, max per-net norm

    def featurize(block: list[int]) -> list[Tensor]:
        zoo, rows = zoos[nets[block[0]][0]], [nets[i][1] for i in block]
        stacked = {k: v.to(device) for k, v in zoo.stacked(rows).items()}
        out = []
        for fs in sets:
            feats = fs.measure.features_from(zoo, rows, stacked)
            for c in fs.chains:
                out.append(feats[c - 1].float())
                norms = torch.linalg.vector_norm(out[-1], dim=1)  # (B,) one per net, no copy of the block
                lo, hi = spread.get((fs.measure.name, c), (math.inf, 0.0))
                spread[(fs.measure.name, c)] = min(lo, float(norms.min())), max(hi, float(norms.max()))
        return out

    trains = [[index[(a, r["task"], r["seed"])] for r in s.train] for s in splits]
    dtypes = [fs.measure.gram_dtype for fs in sets for _ in fs.chains]
    weights = max(4 * sum(t.numel() for t in z.template.state_dict().values()) for z in zoos)  # float32 as read
    gram_bytes = 8 * len(nets) * sum(map(len, trains)) * len(dtypes)  # float64, every split and feature set
    size = block_size(4 * sum(sum(fs.dims) for fs in sets), budget_gb * 2**30, weights, gram_bytes)
    grams = split_grams(len(nets), blocks_of([z for z, _ in nets], size), trains, featurize, dtypes,
                        hold_all=len(nets) <= 2 * size, device=device, progress=progress)
    check_feature_spread(spread)
    out, k = [], 0
    for fs in sets:
        per_chain = []
        for _ in fs.chains:
            per_split = []
            for r, s in enumerate(splits):
                g = grams[r][k]
                pick = lambda rows, z: g[[index[(z, row["task"], row["seed"])] for row in rows]]  # noqa: E731
                per_split.append((pick(s.train, a), pick(s.test, b), pick(study.unseen, b)))
            per_chain.append(per_split)
            k += 1
        out.append(per_chain)
    return out
