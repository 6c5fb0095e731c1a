"""HTT from streamed Grams: the same numbers as from features held in memory, within a budget."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from weightsim.data.digits import digits
from weightsim.htt.classifier import fit_classifier, fit_reduced, gram_reduction, standardization
from weightsim.htt.gram import block_size, chain_grams
from weightsim.htt.run import ClassifierConfig, ProtocolConfig, run_htt
from weightsim.chains import ChainOptions
from weightsim.nets.mlp import MLP
from weightsim.zoo.generate import ZooConfig, generate_zoo


def groups_and_features(seed: int = 0):
    """Three groups of nets (train 23, test 11, unseen 7) with two chains of 40 and 9 features."""
    g = torch.Generator().manual_seed(seed)
    sizes, dims = (23, 11, 7), (40, 9)
    feats = [[torch.randn(n, d, generator=g) * (1 + torch.arange(d)) + 3.0 for d in dims] for n in sizes]
    feats[0][1][:, 0] = 5.0  # a constant feature: std 1, z 0 (as standardization does)
    groups = [[{"i": i} for i in range(n)] for n in sizes]
    return groups, feats


def test_streamed_grams_equal_the_grams_of_features_in_memory():
    groups, feats = groups_and_features()
    calls = []

    def featurize(gi: int, rows: list[dict]) -> list[torch.Tensor]:
        calls.append(len(rows))
        idx = torch.tensor([r["i"] for r in rows])
        return [f[idx] for f in feats[gi]]

    per_net = (40 + 9) * 4
    budget = 4 * per_net * 5  # blocks of 5 nets: 5 training blocks, 3 + 2 blocks of the others
    grams = chain_grams(groups, featurize, budget)
    assert block_size(per_net, budget) == 5 and max(calls) <= 5  # never more than a block at once
    assert len(calls) > 1 + 5 + 5  # training blocks were featurized again for their pairs
    for c, gr in enumerate(grams):
        mean, std = standardization(feats[0][c].double())
        z = [(f[c].double() - mean) / std for f in feats]
        assert gr.dim == feats[0][c].shape[1]
        torch.testing.assert_close(gr.train, z[0] @ z[0].T, rtol=1e-5, atol=1e-4)
        for x, zx in zip(gr.cross, z[1:]):
            torch.testing.assert_close(x, zx @ z[0].T, rtol=1e-5, atol=1e-4)
    # one block for everything: each net featurized once (+ the one net that sizes the blocks)
    calls.clear()
    chain_grams(groups, featurize, 1e9)
    assert sorted(calls) == [1, 7, 11, 23]


def test_classifier_from_grams_equals_classifier_from_features():
    groups, feats = groups_and_features(1)
    y = torch.arange(23) % 3
    x, xt = feats[0][0], feats[1][0]
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
    taskset = digits(train_tasks=3, unseen_tasks=2)
    build = partial(MLP, input_shape=taskset.input_shape, num_classes=2, hidden=8, depth=3)
    zc = ZooConfig(seeds=6, epochs=2, population_size=16, accelerator="cpu")
    ident = {"dataset": {"name": "digits", "config": {}}, "arch": {"name": "mlp", "config": {"_target_": "weightsim.nets.mlp.MLP", "hidden": 8, "depth": 3}},
             "tasks": [t.meta() for t in taskset.tasks], "config_hash": "t", "input_shape": [64],
             "num_classes": 2}
    zoo = generate_zoo(build, taskset, zc, tmp_path / "zoo", ident, progress=False)
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
