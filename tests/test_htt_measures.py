"""A measure is one registry entry: a new one runs through HTT, both protocols and the report
without a change to run_htt."""

from __future__ import annotations

import pytest
import torch

from tests.test_htt_warnings import small_zoo
from weightsim.chains import ChainOptions
from weightsim.nets.spec import chain_layers
from weightsim.htt.protocols import cmc_curve, knn_classify
from weightsim.htt.run import run_htt
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
from weightsim.measures import MEASURES, DistanceMeasure, Measure
from weightsim.measures.chain_gram import ChainGram
from weightsim.zoo.view import Zoo


class SortedRowNorms(Measure):
    """Per layer, the norms of its units' incoming weights, sorted: invariant to permuting units."""

    name = "sorted_row_norms"

    def chain_keys(self, zoo):
        units = [layer.c_out for layer in chain_layers(zoo.template)]
        return [(u, u) for u in units]

    def features(self, zoo, rows):
        stacked = zoo.stacked(rows)  # the zoo view: template, rows, stacked weights, nets, forward
        return [torch.cat([stacked[n].flatten(2).norm(dim=2) for n in layer.raw if stacked[n].dim() > 2], 1)
                .sort(dim=1).values for layer in chain_layers(zoo.template)]

    def describe(self, zoo):
        return {"features": "sorted norms of each unit's incoming weights"}


def test_a_new_measure_is_one_registry_entry(tmp_path, monkeypatch):
    zoo = small_zoo(tmp_path / "zoo", 3, 2)
    monkeypatch.setitem(MEASURES, SortedRowNorms.name, SortedRowNorms)
    pc = ProtocolConfig(queries=2, n_permutations=9, retrieval_permutations=99, repeats=2,
                        measures=["sorted_row_norms", "chain_gram"])
    res = run_htt(str(zoo), pc, ClassifierConfig(max_iter=100), ChainOptions(), progress=False)
    mine = [r for r in res["rows"] if r["measure"] == "sorted_row_norms"]
    assert {(r["protocol"], r["chain"]) for r in mine} == {(p, c) for p in ("classification", "retrieval")
                                                          for c in (1, 2, 3, "all")}
    assert [r["feature_dim"] for r in mine if r["protocol"] == "classification"] == [8, 8, 2, None]
    assert all(r["p_value"] is not None and r["decision"] in ("accept", "reject") for r in mine)
    assert res["meta"]["measures"]["sorted_row_norms"]["features"].startswith("sorted norms")
    assert (1, "sorted_row_norms") in res["cmc"]


class GramDistance(DistanceMeasure):
    """A distance-only measure: Euclidean distance between the nets' chain Grams."""

    name = "gram_distance"

    def chain_keys(self, zoo):
        return ChainGram(context=self.context).chain_keys(zoo)

    def distances(self, zoo_a, rows_a, zoo_b, rows_b):
        gram = ChainGram(context=self.context)
        fa, fb = (gram.features(z, r) for z, r in ((zoo_a, rows_a), (zoo_b, rows_b)))
        return [torch.cdist(a.double(), b.double()) for a, b in zip(fa, fb)]

    def describe(self, zoo):
        return {"distances": "||G_l(a) - G_l(b)||_F"}


def test_a_distance_measure_runs_both_protocols_without_a_classifier(tmp_path, monkeypatch):
    """A measure that gives only distances gets the same rows (k-NN classification, CMC retrieval,
    both nulls, bound, effect size), and its numbers are the protocol functions' on its distances."""
    zoo_dir = small_zoo(tmp_path / "zoo", 3, 2)
    measure = GramDistance()
    monkeypatch.setitem(MEASURES, GramDistance.name, GramDistance)
    pc = ProtocolConfig(queries=2, n_permutations=19, retrieval_permutations=99, repeats=2, knn=3,
                        measures=["gram_distance"])
    res = run_htt(str(zoo_dir), pc, ClassifierConfig(max_iter=100), ChainOptions(), progress=False)
    rows = {(r["protocol"], r["chain"]): r for r in res["rows"]}
    assert set(rows) == {(p, c) for p in ("classification", "retrieval") for c in (1, 2, 3, "all")}
    for r in rows.values():
        assert r["measure"] == "gram_distance" and r["p_value"] is not None and r["repeats"] == 2
    # the fixed split by hand: the 3 lowest of 5 seeds train, the rest are tested; k-NN with k = 3
    zoo = Zoo(zoo_dir)
    seen = zoo.select(role="train")
    train = [r for r in seen if r["seed"] < 3]
    test = [r for r in seen if r["seed"] >= 3]
    label = {t: i for i, t in enumerate(sorted({r["task"] for r in seen}))}
    d = measure.distances(zoo, test, zoo, train)
    for c in (1, 2, 3):
        pred = knn_classify(d[c - 1], torch.tensor([label[r["task"]] for r in train]), 3)
        truth = torch.tensor([label[r["task"]] for r in test])
        assert rows[("classification", c)]["accuracy"] == pytest.approx(float((pred == truth).double().mean()))
    unseen = zoo.select(role="unseen")
    q = [r for r in unseen if r["seed"] < 2]
    g = [r for r in unseen if r["seed"] >= 2]
    dq = measure.distances(zoo, q, zoo, g)
    for c in (1, 2, 3):
        curve = cmc_curve(dq[c - 1], torch.tensor([r["task"] for r in q]), torch.tensor([r["task"] for r in g]))
        assert rows[("retrieval", c)]["accuracy"] == pytest.approx(float(curve[0]))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_the_chain_gram_distance_is_the_protocol_metric_between_the_gram_features(tmp_path, metric):
    """chain_gram_distance honours protocol.metric: its distances are those of the chain Gram
    features under that metric (euclidean: ||g_a - g_b||; cosine: 1 - cos(g_a, g_b)), and HTT's
    k-NN on them is what run_htt reports."""
    from weightsim.measures import MeasureContext, make_measure

    zoo_dir = small_zoo(tmp_path / "zoo", 3, 2)
    zoo = Zoo(zoo_dir)
    rows = zoo.select(role="train")
    measure = make_measure("chain_gram_distance", context=MeasureContext(ChainOptions(), metric))
    feats = ChainGram().features(zoo, rows)
    for d, f in zip(measure.distances(zoo, rows, zoo, rows), feats):
        f = f.double()
        if metric == "cosine":
            f = f / f.norm(dim=1, keepdim=True)
            want = 1 - f @ f.T
        else:
            want = (f[:, None] - f[None]).norm(dim=2)
        assert torch.allclose(d, want, atol=1e-9)
    pc = ProtocolConfig(queries=2, n_permutations=9, retrieval_permutations=99, repeats=1, metric=metric,
                        measures=["chain_gram_distance"])
    res = run_htt(str(zoo_dir), pc, ClassifierConfig(max_iter=100), ChainOptions(), progress=False)
    assert res["meta"]["measures"]["chain_gram_distance"]["features"].lower().startswith(metric)
    train = [r for r in rows if r["seed"] < 3]
    test = [r for r in rows if r["seed"] >= 3]
    label = {t: i for i, t in enumerate(sorted({r["task"] for r in rows}))}
    d = measure.distances(zoo, test, zoo, train)
    got = {r["chain"]: r["accuracy"] for r in res["rows"] if r["protocol"] == "classification"}
    for c in (1, 2, 3):
        pred = knn_classify(d[c - 1], torch.tensor([label[r["task"]] for r in train]), 1)
        truth = torch.tensor([label[r["task"]] for r in test])
        assert got[c] == pytest.approx(float((pred == truth).double().mean()))


def test_weightsim_htt_reads_a_measures_own_settings(tmp_path):
    """protocol.measures=[weight_matching] in weightsim-htt runs it with its measure/weight_matching
    settings (those weightsim-compare reads), not with fixed defaults; a bad setting is one error
    naming its key."""
    from weightsim.errors import ConfigError
    from weightsim.measures import make_measure

    zoo_dir = small_zoo(tmp_path / "zoo", 3, 2)
    pc = ProtocolConfig(queries=2, n_permutations=0, retrieval_permutations=0, repeats=1,
                        measures=["weight_matching"])
    res = run_htt(str(zoo_dir), pc, ClassifierConfig(max_iter=100), ChainOptions(), progress=False,
                  measure_settings={"weight_matching": {"restarts": 2, "max_iter": 7}})
    described = res["meta"]["measures"]["weight_matching"]
    assert (described["restarts"], described["max_iter"]) == (2, 7)
    assert make_measure("cka", {"probe": 40}).settings.probe == 40
    with pytest.raises(ConfigError, match=r"measure\.cka\.probe=1 must be >= 2"):
        make_measure("cka", {"probe": 1})
    with pytest.raises(ConfigError, match=r"measure\.match\.where='mid': choose post"):
        make_measure("match", {"where": "mid"})
    with pytest.raises(ConfigError, match=r"match eps 1.5 must lie in \(0, 1\) \(measure\.match\.eps"):
        make_measure("match", {"eps": 1.5})
    with pytest.raises(ConfigError, match=r"measure\.weight_matching\.restarts=0 must be >= 1"):
        make_measure("weight_matching", {"restarts": 0})
    with pytest.raises(ConfigError, match=r"unknown protocol.measures entry 'nope': choose from chain_gram, raw"):
        make_measure("nope")
