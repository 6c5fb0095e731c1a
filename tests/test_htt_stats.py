"""The protocols on representations and on distance matrices: nulls, effect size, accuracy,
hit rate at k (torchmetrics) and the overall row, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from weightsim.htt import (accuracy, cmc_curve, distances, effect_size, knn_classify, knn_null, permutation_p_value,
                           retrieval_null)
from weightsim.htt.rows import overall_row


def old_cmc_curve(dist, query_labels, gallery_labels, max_rank):
    """The CMC as computed before torchmetrics: first matching rank in a stable sort."""
    order = torch.argsort(dist, dim=1, stable=True)
    match = gallery_labels[order] == query_labels[:, None]
    first = torch.where(match.any(1), match.float().argmax(1), torch.full_like(query_labels, dist.shape[1]))
    return (first[:, None] < torch.arange(1, max_rank + 1)[None]).float().mean(0).numpy()


def test_cmc_from_torchmetrics_equals_the_first_match_rank():
    g = torch.Generator().manual_seed(3)
    dist = torch.rand(40, 70, generator=g)
    q, gal = torch.randint(0, 7, (40,), generator=g), torch.randint(0, 8, (70,), generator=g)  # label 7: no query
    q[0] = 9  # a query without a match in the gallery scores 0 at every rank
    ours, old = cmc_curve(dist, q, gal, 15), old_cmc_curve(dist, q, gal, 15)
    np.testing.assert_allclose(ours, old, atol=1e-7)
    assert 0 < ours[0] < ours[-1] < 1  # not a trivial curve
    assert np.all(np.diff(ours) >= 0)


def clusters(n_tasks: int, per_task: int, spread: float, seed: int = 0):
    """Representations of nets: per task a center, nets scattered around it."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_tasks, 6, generator=g) * 3
    labels = torch.arange(n_tasks).repeat_interleave(per_task)
    return centers[labels] + spread * torch.randn(len(labels), 6, generator=g), labels


def test_accuracy_of_heads_is_top1():
    logits = torch.tensor([[[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]],
                           [[0.0, 1.0], [5.0, 3.0], [1.0, 0.0]]])  # (H=2, N=3, C=2)
    y = torch.tensor([0, 1, 1])
    torch.testing.assert_close(accuracy(logits, y), torch.tensor([2 / 3, 0.0]))


def test_effect_size_hand_made():
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])  # two tasks, seeds 1 apart, tasks ~10 apart
    labels = torch.tensor([0, 0, 1, 1])
    d = distances(x, x, "euclidean")
    assert effect_size(d, labels) == pytest.approx(np.mean([10, 11, 9, 10]) / 1.0)
    mixed = torch.tensor([0, 1, 0, 1])  # the same nets, tasks that do not separate them
    assert effect_size(d, mixed) < 1
    assert effect_size(torch.zeros(4, 4) + (1 - torch.eye(4)) * (labels[:, None] != labels[None]), labels) == float("inf")
    assert np.isnan(effect_size(d, torch.tensor([0, 1, 2, 3])))  # no two nets of one task: undefined


def test_knn_classification_from_distances_and_its_null():
    x, y = clusters(4, 12, 0.5)
    train = torch.arange(len(y)) % 3 != 0  # two thirds train, the rest test
    d = distances(x[~train], x[train], "euclidean")
    for k in (1, 5):
        pred = knn_classify(d, y[train], k)
        assert (pred == y[~train]).float().mean() == 1.0
    null = knn_null(d, y[train], y[~train], 199, k=1, seed=0)
    assert abs(float(null.mean()) - 0.25) < 0.05  # shuffled training labels: chance
    assert permutation_p_value(1.0, null.numpy()) == pytest.approx(1 / 200)
    # ties among k = 2 votes go to the nearer net's task; a batch of labelings at once
    d2 = torch.tensor([[0.1, 0.2, 5.0]])
    assert int(knn_classify(d2, torch.tensor([1, 0, 0]), 2)) == 1
    assert knn_classify(d2, torch.tensor([[1, 0, 0], [0, 1, 1]]), 2).tolist() == [[1], [0]]


def test_retrieval_null_is_chance_and_gives_a_p_value():
    x, y = clusters(5, 10, 0.3, seed=1)
    q = torch.arange(len(y)) % 10 < 3  # 3 queries per task, 7 in the gallery
    d = distances(x[q], x[~q], "euclidean")
    rank1 = cmc_curve(d, y[q], y[~q], 5)[0]
    null = retrieval_null(d, y[q], y[~q], 9999, seed=0)
    assert rank1 == 1.0 and abs(float(null.mean()) - 0.2) < 0.01  # chance = 7/35 of the gallery matches
    assert permutation_p_value(rank1, null.numpy()) == pytest.approx(1e-4)
    # no task structure: the same nets with labels unrelated to their position
    noise = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    yn = y[noise]
    null_n = retrieval_null(d, yn[q], yn[~q], 2000, seed=0)
    assert permutation_p_value(cmc_curve(d, yn[q], yn[~q], 1)[0], null_n.numpy()) > 0.05


def test_the_distance_protocols_test_a_distance_only_measure():
    """A measure that yields only a net x net distance matrix goes through the same tests: k-NN
    classification with its permutation null, retrieval with its chance null, the effect size."""
    x, y = clusters(4, 15, 1.0, seed=2)
    dist = distances(x, x, "euclidean")  # all that such a measure hands over
    train, test = torch.arange(60) % 15 < 9, torch.arange(60) % 15 >= 9
    acc = float((knn_classify(dist[test][:, train], y[train], 3) == y[test]).float().mean())
    p_cls = permutation_p_value(acc, knn_null(dist[test][:, train], y[train], y[test], 99, 3).numpy())
    assert acc > 0.9 and p_cls == pytest.approx(0.01)
    assert effect_size(dist, y) > 1.5
    blind = torch.randn(60, 6, generator=torch.Generator().manual_seed(5))  # nets placed without regard to task
    flat = distances(blind, blind, "euclidean")
    acc0 = float((knn_classify(flat[test][:, train], y[train], 3) == y[test]).float().mean())
    assert permutation_p_value(acc0, knn_null(flat[test][:, train], y[train], y[test], 99, 3).numpy()) > 0.05
    assert effect_size(flat, y) == pytest.approx(1.0, abs=0.1)


def row(chain, decision, bound_decision, p, acc):
    return {"protocol": "classification", "measure": "chain_gram", "chain": chain, "accuracy": acc,
            "accuracy_mean": acc, "accuracy_sd": 0.01, "effect_size": 2.0 * acc, "error": 1 - acc,
            "error_upper_bound": 1.02 - acc, "decision": decision, "decision_bound": bound_decision,
            "p_value": p, "null_mean": 0.1, "rank5": None, "feature_dim": 10, "n": 120}


def test_overall_row_accepts_only_when_every_chain_accepts():
    rows = [row(1, "accept", "accept", 0.01, 1.0), row(2, "accept", "reject", 0.02, 0.97)]
    all_ = overall_row(rows)
    assert (all_["chain"], all_["decision"], all_["decision_bound"]) == ("all", "accept", "reject")
    assert (all_["accuracy"], all_["p_value"], all_["error_upper_bound"]) == (0.97, 0.02, pytest.approx(0.05))
    rows.append(row(3, "reject", "reject", 0.5, 0.6))
    assert overall_row(rows)["decision"] == "reject" and overall_row(rows)["p_value"] == 0.5


def test_unknown_measure_lists_the_choices(tmp_path):
    res = run_cli("htt", "protocol.measures=[chain_gram,svcca]", f"zoo_dir={tmp_path}", f"hydra.run.dir={tmp_path}")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "unknown protocol.measures entry 'svcca'" in lines[0]
    assert all(m in lines[0] for m in ("chain_gram", "raw", "cka", "match", "weight_matching"))
