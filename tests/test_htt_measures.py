"""A measure is one registry entry: a new one runs through HTT, both protocols and the report
without a change to run_htt."""

from __future__ import annotations

import torch

from tests.test_htt_warnings import small_zoo
from weightsim.chains import ChainOptions
from weightsim.chains.core import chain_layers
from weightsim.htt.measures import MEASURES, Measure
from weightsim.htt.run import ClassifierConfig, ProtocolConfig, run_htt


class SortedRowNorms(Measure):
    """Per layer, the norms of its units' incoming weights, sorted: invariant to permuting units."""

    name = "sorted_row_norms"

    def chain_keys(self, zoo, opts):
        units = [layer.c_out for layer in chain_layers(zoo.template)]
        return [(u, u) for u in units]

    def features(self, zoo, rows, opts):
        stacked = zoo.stacked(rows)  # the zoo view: template, rows, stacked weights, nets, forward
        return [torch.cat([stacked[n].flatten(2).norm(dim=2) for n in layer.raw if stacked[n].dim() > 2], 1)
                .sort(dim=1).values for layer in chain_layers(zoo.template)]

    def describe(self, zoo, opts):
        return {"features": "sorted norms of each unit's incoming weights"}


def test_a_new_measure_is_one_registry_entry(tmp_path, monkeypatch):
    zoo = small_zoo(tmp_path / "zoo", 3, 2)
    monkeypatch.setitem(MEASURES, SortedRowNorms.name, SortedRowNorms())
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
