"""HTT from streamed Grams: the same numbers as from features held in memory, within a budget."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from weightsim.data.digits import digits
from weightsim.htt.classifier import fit_classifier, fit_reduced, gram_reduction, standardization
from weightsim.htt.gram import blocks_of, split_grams
from weightsim.htt.run import run_htt
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
from weightsim.chains import ChainOptions
from weightsim.nets.mlp import MLP
from weightsim.zoo.generate import ZooConfig, generate_zoo


def nets_and_features(seed: int = 0):
    """41 nets with two feature sets of 40 and 9 features (one feature constant), and three seed
    splits' training nets (23, 20 and 23 of them, in a shuffled order)."""
    g = torch.Generator().manual_seed(seed)
    n, dims = 41, (40, 9)
    feats = [torch.randn(n, d, generator=g) * (1 + torch.arange(d)) + 3.0 for d in dims]
    feats[1][:, 0] = 5.0  # a constant feature: std 1, z 0 (as standardization does)
    trains = [torch.randperm(n, generator=g)[:k].tolist() for k in (23, 20, 23)]
    return n, feats, trains


@pytest.mark.parametrize("hold_all", [True, False])
def test_split_grams_equal_the_grams_of_features_in_memory(hold_all):
    """Blocks of 5 nets (two groups: 30 + 11), three splits: each split's Gram of its own standardized
    features, every net's row; with hold_all each block is featurized exactly once for all splits."""
    n, feats, trains = nets_and_features()
    calls = []

    def featurize(block: list[int]) -> list[torch.Tensor]:
        calls.append(tuple(block))
        return [f[block] for f in feats]

    blocks = blocks_of([0] * 30 + [1] * 11, 5)
    assert [len(b) for b in blocks] == [5] * 6 + [5, 5, 1]  # never across a group
    dtypes = [torch.float64, torch.float32]
    grams = split_grams(n, blocks, trains, featurize, dtypes, hold_all)
    for r, train in enumerate(trains):
        for k, f in enumerate(feats):
            mean, std = standardization(f[train].double())
            z = (f.double() - mean) / std
            # float32 products over <= 40 standardized features: relative error ~1e-6
            torch.testing.assert_close(grams[r][k], z @ z[train].T, rtol=1e-5, atol=1e-4)
    if hold_all:
        assert sorted(calls) == sorted(map(tuple, blocks))  # one read of every net for all splits
    else:
        assert max(map(len, calls)) <= 5 and len(calls) > len(blocks)  # featurized again, never more than a block


def test_raw_in_float32_keeps_the_results(tmp_path, monkeypatch):
    """The raw baseline's Grams in float32 (its default) against float64: Grams within 1e-4 relative
    (float32 sums over D = 64 x 64 + 64 x 64 + 64 x 2 standardized weights), and the same report rows:
    accuracies, their spread over the repeats, p-values and effect sizes."""
    from weightsim.measures.raw import RawLayers

    zoo = digits_zoo(tmp_path / "zoo", hidden=64, seeds=6)
    pc = ProtocolConfig(train_seeds=3, queries=2, n_permutations=9, retrieval_permutations=99, repeats=3,
                        measures=["raw"])
    assert RawLayers.gram_dtype == torch.float32
    f32 = run_htt(str(zoo), pc, ClassifierConfig(max_iter=200), ChainOptions(), progress=False)
    monkeypatch.setattr(RawLayers, "gram_dtype", torch.float64)
    f64 = run_htt(str(zoo), pc, ClassifierConfig(max_iter=200), ChainOptions(), progress=False)
    assert len(f32["rows"]) == len(f64["rows"]) == 2 * (3 + 1)
    for a, b in zip(f32["rows"], f64["rows"]):
        for key in ("accuracy", "accuracy_mean", "p_value", "decision"):
            assert a[key] == b[key], (key, a, b)
        assert a["effect_size"] == pytest.approx(b["effect_size"], rel=1e-3)


def digits_zoo(root, hidden: int = 8, seeds: int = 6):
    taskset = digits(train_tasks=3, unseen_tasks=2)
    build = partial(MLP, input_shape=taskset.input_shape, num_classes=2, hidden=hidden, depth=3)
    zc = ZooConfig(seeds=seeds, epochs=2, population_size=16, accelerator="cpu")
    ident = {"dataset": {"name": "digits", "config": {}},
             "arch": {"name": "mlp", "config": {"_target_": "weightsim.nets.mlp.MLP", "hidden": hidden, "depth": 3}},
             "tasks": [t.meta() for t in taskset.tasks], "config_hash": "t", "input_shape": [64],
             "num_classes": 2}
    return generate_zoo(build, taskset, zc, root, ident, progress=False)


def test_classifier_from_grams_equals_classifier_from_features():
    _, feats, _ = nets_and_features(1)
    y = torch.arange(23) % 3
    x, xt = feats[0][:23], feats[0][23:34]
    model = fit_classifier(x, y, 3, n_null=2, seed=0)
    mean, std = standardization(x)
    z, zt = (x - mean) / std, (xt - mean) / std
    proj, reduced = gram_reduction(z.double() @ z.double().T)
    kernel = fit_reduced(reduced.float(), y, 3, n_null=2, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(kernel.head((zt.double() @ z.double().T @ proj).float()), model(xt),
                                   rtol=1e-4, atol=1e-4)


def test_htt_report_is_the_same_with_a_tiny_feature_budget(tmp_path):
    """A budget of a few nets makes every chain's Grams stream in many blocks: same report rows."""
    zoo = digits_zoo(tmp_path / "zoo")
    pc = dict(train_seeds=3, queries=2, n_permutations=3, repeats=2)
    big = run_htt(str(zoo), ProtocolConfig(**pc), ClassifierConfig(max_iter=200), ChainOptions(), progress=False)
    tiny = run_htt(str(zoo), ProtocolConfig(**pc, feature_budget_gb=2e-6), ClassifierConfig(max_iter=200),
                   ChainOptions(), progress=False)
    assert len(big["rows"]) == len(tiny["rows"]) == 2 * 2 * (3 + 1)  # 2 measures x 2 protocols x (3 chains + all)
    for a, b in zip(big["rows"], tiny["rows"]):
        assert (a["protocol"], a["chain"], a["measure"]) == (b["protocol"], b["chain"], b["measure"])
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-9), a
        assert a["accuracy_mean"] == pytest.approx(b["accuracy_mean"], abs=1e-9), a  # the random split too
        assert a["p_value"] == pytest.approx(b["p_value"], abs=1e-9)
