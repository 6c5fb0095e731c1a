"""`make bench`: HTT on a 160-net MLP-4 zoo at 32 x 32 inputs, before and after issue 18, side by side.

    python -m bench.htt                    # zoo (6 + 2 tasks x 20 seeds) in a temp dir, both HTTs, FLOPs
    python -m bench.htt --zoo-dir DIR      # keep / reuse the zoo there

*Before* is the HTT of the code before issue 18, kept here only as a reference implementation: the
chain walk multiplied the first layer into an explicit C_0 = I, and every repeat and every measure
read and featurized every net again, its Grams in float64 (``walk_from_identity``,
``chain_grams_before``, ``htt_before``). *After* is ``run_htt``: the sketch applied to the weights,
one read of the zoo for every repeat and measure, the raw Grams in float32. Both run with the same
settings (the protocol's defaults) on the same zoo in one process; the report rows must agree.

It also counts the FLOPs of one net's chain walk (``torch.utils.flop_counter.FlopCounterMode``) of
MLP-4 at 32 x 32 and 64 x 64 inputs, before and after. The nets are trained for a few SGD steps on
synthetic data: the cost of HTT does not depend on training. Run from the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

import weightsim.chains.core as core
from weightsim.chains import ChainOptions, chain_features
from weightsim.chains.core import ChainLayer, _bn_affine, _fold_gamma, _unit_columns, block_kernel, homogeneous
from weightsim.config import CONF
from weightsim.data.tasks import build_taskset
from weightsim.errors import ChainError
from weightsim.htt.classifier import one_thread
from weightsim.htt.gram import block_size, standardizer
from weightsim.htt.evaluate import evaluate_chain
from weightsim.htt.rows import measure_rows
from weightsim.htt.run import measure_chains, run_htt
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
from weightsim.htt.study import make_split, open_study
from weightsim.measures import Measure, MeasureContext, make_measures
from weightsim.nets.build import build_net
from weightsim.zoo.generate import ZooConfig, generate_zoo

TRAIN_TASKS, UNSEEN_TASKS, SEEDS = 6, 2, 20  # 160 nets


def mlp4_config() -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "arch" / "mlp4.yaml"), resolve=True)
    return {k: v for k, v in cfg.items() if k != "_partial_"}


def make_zoo(root: Path, size: int = 32) -> Path:
    """6 training + 2 unseen 2-class tasks of Gaussian samples at 3 x size x size (flat), 20 seeds of
    MLP-4 each (conf/arch/mlp4.yaml), 3 SGD steps per net."""
    classes, per_class = 2 * (TRAIN_TASKS + UNSEEN_TASKS), 12
    g = torch.Generator().manual_seed(0)
    y = np.repeat(np.arange(classes), per_class)
    means = 0.3 * torch.randn(classes, 3 * size * size, generator=g)
    x = torch.randn(len(y), 3 * size * size, generator=g) + means[torch.from_numpy(y)]
    taskset = build_taskset("synthetic", x, y, [str(i) for i in range(classes)], classes_per_task=2,
                            grouping="consecutive", train_tasks=TRAIN_TASKS, unseen_tasks=UNSEEN_TASKS,
                            test_fraction=0.25)
    arch = mlp4_config()
    ident = {"dataset": {"name": "synthetic", "config": {"size": size}}, "arch": {"name": "mlp4", "config": arch},
             "tasks": [t.meta() for t in taskset.tasks], "config_hash": f"bench-htt-{size}",
             "input_shape": [3 * size * size], "num_classes": 2}
    zc = ZooConfig(seeds=SEEDS, steps=3, batch_size=8, accelerator="cpu")
    return generate_zoo(lambda: build_net(arch, (3 * size * size,), 2), taskset, zc, root, ident, progress=False)


# -- the reference implementation of the code before issue 18 --------------------------------------
def walk_from_identity(layers: list[ChainLayer], params: dict[str, Tensor], opts: ChainOptions,
                       sketches: list[Tensor | None]) -> list[Tensor]:
    """The chain walk before issue 18 (verbatim): C_0 = I, multiplied by every layer."""
    h = 1 if opts.bias else 0
    first = params[layers[0].blocks[0].weight]
    c = torch.eye(layers[0].c_in + h, dtype=first.dtype, device=first.device)[None]  # C_0 = I
    chains = []
    for layer, s in zip(layers, sketches):
        for bn in layer.bn_before if opts.bn == "fold" else ():
            d, t = _bn_affine(bn, params, layer.c_in, first)
            # C <- C [[D, 0], [t, 1]]: BN's per-unit affine map folded into the next layer
            scaled = c[..., :layer.c_in] * d
            if opts.bias:
                scaled = scaled + c[..., layer.c_in:] * t
            c = torch.cat([scaled, c[..., layer.c_in:]], -1)
        kernels = []
        for block in layer.blocks:
            k, b = block_kernel(block, params)
            kernels.append(homogeneous(k, b) if opts.bias else k)
        k = torch.stack(kernels)  # (B, c_out', c_in', kh, kw)
        nb, c_out, c_in, kh, kw = k.shape
        if c.shape[-1] != c_in:
            raise ChainError(f"module '{layer.module}' takes {c_in} inputs, the chain gives {c.shape[-1]}")
        r = k.permute(0, 2, 3, 4, 1).reshape(nb, c_in, kh * kw * c_out)  # R_l: c_{l-1} x (kh kw c_l)
        p, rows = c.shape[0], c.shape[1]
        c = torch.einsum("prc,bck->pbrk", c, r)  # C_{l-1} R_l, every part with every block
        c = c.reshape(p * nb, rows * kh * kw, c_out)  # reshape to (rows kh kw, c_l)
        if s is not None:
            c = s @ c  # C^_l = S_l reshape(C^_{l-1} R_l): a fixed left map, invariance stays exact
        invariant = opts.bn == "invariant"
        if invariant and layer.bn_absorbs:
            c = _unit_columns(c, layer.c_out)  # C_l diag(1/||C_l[:, j]||): the BN-absorbed scale removed
        chains.append(c)
        keep = [i for i, b in enumerate(layer.blocks) if b.continues]
        if len(keep) < nb:  # only parts whose columns transform like the layer's output continue
            c = c.view(p, nb, *c.shape[1:])[:, keep].reshape(p * len(keep), *c.shape[1:])
        if invariant and layer.bn_after is not None:
            c = _fold_gamma(c, layer.bn_after, params, layer.c_out, opts.bias)
    return chains


@contextlib.contextmanager
def identity_walk():
    """Every chain walk in this block starts from C_0 = I, as before issue 18."""
    new = core._walk_params
    core._walk_params = walk_from_identity
    try:
        yield
    finally:
        core._walk_params = new


def _moments64(x: Tensor) -> tuple[int, Tensor, Tensor]:
    x = x.double()
    mean = x.mean(0)
    return len(x), mean, (x - mean).pow(2).sum(0)


def _merge(a, b):
    if a is None:
        return b
    (na, ma, qa), (nb, mb, qb) = a, b
    n = na + nb
    d = mb - ma
    return n, ma + d * (nb / n), qa + qb + d.pow(2) * (na * nb / n)


def _dot64(a: Tensor, b: Tensor, columns: int = 1 << 16) -> Tensor:
    out = torch.zeros(len(a), len(b), dtype=torch.float64)
    for s in range(0, a.shape[1], columns):
        out += a[:, s:s + columns].double() @ b[:, s:s + columns].double().T
    return out


def chain_grams_before(groups: list[list[dict]], featurize, budget_bytes: float) -> list[tuple[Tensor, list[Tensor]]]:
    """One split's Grams as before: group 0 (training nets) x every group, every net featurized per
    call, moments and products in float64 (blocks of nets within the budget)."""
    first = featurize(0, groups[0][:1])
    block = block_size(sum(f.shape[1] for f in first) * 4, budget_bytes)
    blocks = lambda n: [slice(s, min(n, s + block)) for s in range(0, n, block)]  # noqa: E731
    train, cache = blocks(len(groups[0])), {}

    def feats(g, b, keep=False):
        if (g, b.start) in cache:
            return cache[(g, b.start)]
        out = [f.float() for f in featurize(g, groups[g][b])]
        if keep:
            cache.clear()
            cache[(g, b.start)] = out
        return out

    moments = [None] * len(first)
    for i, b in enumerate(train):
        for c, f in enumerate(feats(0, b, keep=i == len(train) - 1)):
            moments[c] = _merge(moments[c], _moments64(f))
    stand = [tuple(t.float() for t in standardizer(*m)) for m in moments]
    z = lambda fs: [(f - m) / s for f, (m, s) in zip(fs, stand)]  # noqa: E731
    n = len(groups[0])
    grams = [(torch.zeros(n, n, dtype=torch.float64), [torch.zeros(len(g), n, dtype=torch.float64)
                                                        for g in groups[1:]]) for _ in first]
    for i, bi in enumerate(train):
        zi = z(feats(0, bi, keep=True))
        for bj in train[:i + 1]:
            zj = zi if bj == bi else z(feats(0, bj))
            for c, (gt, _) in enumerate(grams):
                blk = _dot64(zi[c], zj[c])
                gt[bi, bj] = blk
                gt[bj, bi] = blk.T
        for g in range(1, len(groups)):
            for bq in blocks(len(groups[g])):
                zq = z(feats(g, bq))
                for c, (_, cross) in enumerate(grams):
                    cross[g - 1][bq, bi] = _dot64(zq[c], zi[c])
    return grams


def htt_before(zoo_dir: str, pc: ProtocolConfig, cc: ClassifierConfig, co: ChainOptions, seed: int = 0) -> list[dict]:
    """The report rows of the HTT before issue 18 (feature measures): per measure, per repeat, every
    group of nets (training, test, unseen) read and featurized in (task, seed) order, Grams in float64."""
    study = open_study(zoo_dir, None, pc)
    splits = [make_split(study, pc, r, seed) for r in range(pc.repeats)]
    report = []
    with identity_walk():
        for measure in make_measures(pc.measures, context=MeasureContext(co, pc.metric)):
            chains, keys = measure_chains(study, measure, pc)
            runs = {c: [] for c in chains}
            for split in splits:
                parts = [(study.train_zoo, split.train), (study.eval_zoo, split.test), (study.eval_zoo, study.unseen)]
                for c, (g_train, (g_test, g_unseen)) in zip(chains, grams_before(parts, chains, measure, pc)):
                    with one_thread():
                        runs[c].append(evaluate_chain(g_train, g_test, g_unseen, split, study, pc, cc, seed + c))
            report += measure_rows(measure, chains, keys, runs, pc)[0]
    return report


def grams_before(parts, chains: list[int], measure: Measure, pc: ProtocolConfig):
    ordered = []
    for _, rows in parts:
        order = sorted(range(len(rows)), key=lambda j: (rows[j]["task"], rows[j]["seed"]))
        ordered.append(([rows[j] for j in order], torch.argsort(torch.tensor(order, dtype=torch.long))))

    def featurize(g: int, rows: list[dict]) -> list[Tensor]:
        feats = measure.features(parts[g][0], rows)
        return [feats[c - 1] for c in chains]

    grams = chain_grams_before([o[0] for o in ordered], featurize, pc.feature_budget_gb * 2**30)
    b0 = ordered[0][1]
    return [(gt[b0][:, b0], [x[back][:, b0] for x, (_, back) in zip(cross, ordered[1:])]) for gt, cross in grams]


# -- the measurements -------------------------------------------------------------------------------
def walk_flops(size: int, before: bool) -> float:
    """FLOPs of one MLP-4 net's chain features (every chain, default ChainOptions) at 3 x size x size."""
    torch.manual_seed(0)
    net = build_net(mlp4_config(), (3 * size * size,), 2).eval()
    with identity_walk() if before else contextlib.nullcontext(), FlopCounterMode(display=False) as count:
        chain_features(net, ChainOptions())
    return count.get_total_flops()


def bench(zoo_dir: Path) -> dict:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # one Trainer per classifier fit: quiet
    t0 = time.perf_counter()
    if not (zoo_dir / "zoo.json").exists():
        make_zoo(zoo_dir)
    t_zoo = time.perf_counter() - t0
    pc, cc, co = ProtocolConfig(device="cpu"), ClassifierConfig(), ChainOptions()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sketch warning, printed by both
        t0 = time.perf_counter()
        after = run_htt(str(zoo_dir), pc, cc, co, progress=False)["rows"]
        t_after = time.perf_counter() - t0
        t0 = time.perf_counter()
        before = htt_before(str(zoo_dir), pc, cc, co)
        t_before = time.perf_counter() - t0
    keys = ("accuracy", "accuracy_mean", "p_value", "decision", "decision_bound")
    assert [(r["measure"], r["protocol"], r["chain"]) for r in before] == \
        [(r["measure"], r["protocol"], r["chain"]) for r in after]
    differ = [{"row": f"{a['measure']} {a['protocol']} chain {a['chain']}", "key": k, "before": b[k], "after": a[k]}
              for b, a in zip(before, after) for k in keys if a[k] != b[k]]
    flops = {f"{s}x{s}": {"before": walk_flops(s, True), "after": walk_flops(s, False)} for s in (32, 64)}
    return {"nets": (TRAIN_TASKS + UNSEEN_TASKS) * SEEDS, "zoo_s": round(t_zoo, 1), "before_s": round(t_before, 1),
            "after_s": round(t_after, 1), "ratio_before_over_after": round(t_before / t_after, 2),
            "same_report_rows": not differ, "differences": differ, "repeats": pc.repeats, "measures": list(pc.measures),
            "walk_flops_per_net": flops, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo-dir", type=Path, default=None, help="make the zoo here (or reuse it) instead of a temp dir")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = bench(a.zoo_dir or Path(tmp) / "zoo")
    print(f"HTT, MLP-4 zoo of {r['nets']} nets at 3x32x32, defaults ({r['repeats']} repeats, measures "
          f"{', '.join(r['measures'])}), CPU, {r['threads']} threads: before {r['before_s']} s, "
          f"after {r['after_s']} s: "
          f"before / after = {r['ratio_before_over_after']}x (same report rows: {r['same_report_rows']})")
    for shape, f in r["walk_flops_per_net"].items():
        print(f"MLP-4 chain walk at 3x{shape}, one net: before {f['before'] / 1e9:.2f} GFLOP, "
              f"after {f['after'] / 1e9:.2f} GFLOP ({f['before'] / f['after']:.1f}x fewer)")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
