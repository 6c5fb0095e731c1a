"""The compare measures on a zoo: activations (streamed = unstreamed, conv channels as neurons over
(image, position) samples, checked against each net run alone), the distance measures against the
compare functions on single nets, and weightsim-compare / weightsim-htt end to end with its errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY, composed, run_cli, train_zoo
from tests.test_cli_errors import only_error_line
from tests.test_zoo_view import DIGITS, GRU, MLP, PLAIN_BN, codes_npz, make_zoo, one_at_a_time
from weightsim.compare import linear_cka, match_curve, weight_matching
from weightsim.errors import ConfigError
from weightsim.measures import make_measure
from weightsim.measures.activations import LOGITS, iter_activations, layer_names, probe_inputs, zoo_activations
from weightsim.measures.chain_gram import ChainGram
from weightsim.zoo import Zoo, hidden_layers


@pytest.fixture(scope="module")
def zoos(tmp_path_factory) -> dict[str, Zoo]:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("compare")
    npz = codes_npz(d / "codes.npz")
    gru_data = {"_target_": "weightsim.data.arrays.arrays", "data_dir": str(npz), "tokens": True,
                "train_tasks": 2, "unseen_tasks": 0}
    return {"mlp": Zoo(make_zoo(d / "mlp", DIGITS, MLP)),
            "plain_bn": Zoo(make_zoo(d / "plain", {**DIGITS, "image": True}, PLAIN_BN)),
            "gru": Zoo(make_zoo(d / "gru", gru_data, GRU)), "npz": str(npz)}


@pytest.mark.parametrize("kind", ["mlp", "plain_bn", "gru"])
def test_activations_stream_in_blocks_and_equal_each_net_alone(zoos, kind):
    """Blocks of one net (a tiny budget) give what one block of all nets gives, and both are each net
    run alone with hooks, a conv channel being a neuron over (image, y, x) samples, a GRU unit over
    (sequence, step). Not bit for bit: another block shape can make BLAS/oneDNN pick another kernel
    that sums in another order (conv blocks differed by 3.6e-7 on an AMD EPYC, activations of order
    1), so the blocks agree to 1e-5, a few hundred float32 roundings and far below any real change."""
    zoo = zoos[kind]
    rows = zoo.rows
    x = probe_inputs(zoo, 20, data_dir=zoos["npz"] if kind == "gru" else None)
    names = layer_names(zoo.template)
    assert names[-1] == LOGITS and names[:-1] == hidden_layers(zoo.template)
    blocks = list(iter_activations(zoo, rows, x, budget_mb=1e-6))
    assert len(blocks) == len(rows) > 1  # streamed: one net per block
    streamed = zoo.activations(rows, x, budget_mb=1e-6)  # the zoo view's entry point
    whole = zoo_activations(zoo, rows, x, budget_mb=1e4)
    hidden = names[:-1]
    logits, ref = one_at_a_time(zoo, rows, x, hidden)
    for n in names:
        torch.testing.assert_close(streamed[n], whole[n], rtol=1e-5, atol=1e-5)
        r = logits if n == LOGITS else ref[n]
        if r.dim() == 5:  # (N, B, C, H, W) -> (N, B*H*W, C): sample (b, y, x), neuron c
            r = r.permute(0, 1, 3, 4, 2).reshape(r.shape[0], -1, r.shape[2])
        if r.dim() == 4:  # (N, B, T, H) -> (N, B*T, H): sample (b, t), neuron h
            r = r.reshape(r.shape[0], -1, r.shape[3])
        torch.testing.assert_close(whole[n], r.float(), rtol=1e-5, atol=1e-5)
    if kind == "plain_bn":
        b, c, h, w = 20, *ref[hidden[0]].shape[2:]
        assert whole[hidden[0]].shape == (len(rows), b * h * w, c) and h > 1
    assert not torch.allclose(whole[names[0]][0], whole[names[0]][1])  # two nets, two activations


def test_pre_activations_feed_the_post_activations(zoos):
    zoo = zoos["mlp"]
    x = probe_inputs(zoo, 30)
    pre, post = (zoo_activations(zoo, zoo.rows[:2], x, where=w) for w in ("pre", "post"))
    names_pre, names_post = layer_names(zoo.template, "pre"), layer_names(zoo.template, "post")
    assert names_pre[:-1] != names_post[:-1]
    for a, b in zip(names_pre[:-1], names_post[:-1]):
        torch.testing.assert_close(torch.relu(pre[a]), post[b])
        assert (pre[a] < 0).any()  # not vacuous: the ReLU cuts something


def test_an_unknown_layer_or_site_is_named(zoos):
    with pytest.raises(ConfigError, match="no layer 'nope'.*measure.cka.layers"):
        layer_names(zoos["mlp"].template, "post", ["nope"])
    with pytest.raises(ConfigError, match="where='mid'"):
        layer_names(zoos["mlp"].template, "mid")


def test_distance_measures_are_the_compare_functions_on_each_pair(zoos):
    zoo = zoos["mlp"]
    rows = zoo.rows
    cka, match, wm, cg = (make_measure("cka", {"probe": 40}), make_measure("match", {"probe": 40, "eps": 0.3}),
                          make_measure("weight_matching"), make_measure("chain_gram_distance"))
    x = probe_inputs(zoo, 40)
    acts = zoo_activations(zoo, rows, x)
    names = layer_names(zoo.template)
    d_cka, d_match, d_wm, d_cg = (m.distances(zoo, rows, zoo, rows) for m in (cka, match, wm, cg))
    nets = zoo.nets(rows)
    feats = ChainGram().features(zoo, rows)
    i, j = 0, 3
    for layer, (n, dc, dm) in enumerate(zip(names, d_cka, d_match)):
        assert dc[i, j] == pytest.approx(1 - linear_cka(acts[n][i], acts[n][j]), abs=1e-12)
        assert dm[i, j] == pytest.approx(1 - match_curve(acts[n][i], acts[n][j], [0.3])[0], abs=1e-12)
        assert torch.equal(dc, dc.T) and torch.equal(dm, dm.T) and dc.diagonal().abs().max() == 0
    al = weight_matching(nets[i], nets[j])
    torch.testing.assert_close(torch.stack([d[i, j] for d in d_wm]),
                               torch.tensor(al.layer_distances, dtype=torch.float64))
    assert sum(v ** 2 for v in al.layer_distances) == pytest.approx(al.distance ** 2, rel=1e-9)
    for f, d in zip(feats, d_cg):
        assert float(d[i, j]) == pytest.approx(float(torch.linalg.norm(f[i].double() - f[j].double())), rel=1e-6)
    assert min(float(d[i, j]) for d in d_cka + d_wm + d_cg) > 0  # not vacuous


def test_shuffled_inputs_are_a_null_for_the_activation_measures(zoos):
    """The same net against itself: CKA 1 on aligned inputs (the match below 1 only by its dead
    neurons, which count but never match), far lower with one side's inputs shuffled."""
    zoo = zoos["mlp"]
    r = zoo.rows[0]
    for name in ("cka", "match"):
        m = make_measure(name, {"probe": 60})
        same = m.distance(m.value(zoo, r, zoo, r))
        null = m.distance(m.value(zoo, r, zoo, r, shuffled=True))
        assert (null[:-1] > same[:-1] + 0.2).all(), (name, same, null)
        assert name == "match" or np.allclose(same, 0, atol=1e-9)


# -- the apps, end to end ---------------------------------------------------------------------------
FAST = ("protocol.repeats=1", "protocol.retrieval_permutations=99", "compare.seeds=2", "compare.barrier_pairs=1",
        "measure.cka.probe=64", "measure.match.probe=64")


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    return train_zoo(tmp_path_factory.mktemp("cli") / "zoo", *TINY)


def test_weightsim_compare_runs_every_measure_through_the_protocols(tiny_zoo, tmp_path):
    out = run_cli("compare", *TINY, *FAST, f"zoo_dir={tiny_zoo}", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "report.json").read_text())
    measures = ["chain_gram", "chain_gram_distance", "cka", "match", "weight_matching"]
    for m in measures:
        for p in ("classification", "retrieval"):
            sel = [r for r in rows if r["measure"] == m and r["protocol"] == p]
            assert [r["chain"] for r in sel] == [1, 2, 3, 4, "all"], (m, p)
            assert all(0 <= r["accuracy"] <= 1 for r in sel)
    pairs = list(csv.DictReader(open(tmp_path / "compare.csv")))
    rel = {(r["measure"], r["relation"]) for r in pairs}
    for m in ("cka", "match"):
        assert {(m, "same_task"), (m, "different_task"), (m, "shuffled_input")} <= rel
    for m in ("weight_matching", "weight_naive", "barrier_naive", "barrier_aligned", "chain_gram_distance"):
        assert {(m, "same_task"), (m, "different_task")} <= rel and (m, "shuffled_input") not in rel
    # 5 tasks x 2 seeds: one same-task pair per task, as many different-task pairs
    cka1 = [r for r in pairs if r["measure"] == "cka" and r["layer"] == "2"]
    assert sum(r["relation"] == "same_task" for r in cka1) == 5 == sum(r["relation"] == "different_task" for r in cka1)
    eps = {float(r["eps"]) for r in pairs if r["measure"] == "match"}
    assert eps == {0.15, 0.2, 0.25, 0.3, 0.5}
    cka = json.loads((tmp_path / "cka.json").read_text())
    assert cka["layers"] == ["2", "4", "6", "logits"] and 0 <= cka["identification"] <= 1
    for png in ("cmc_measures.png", "eps_curves.png", "cka_layers.png"):
        assert (tmp_path / png).stat().st_size > 1000
    plots = (tmp_path / "report.md").read_text().splitlines()[-1]  # names the plots this run wrote, no others
    assert plots.startswith("Plots: `cmc_measures.png`") and "eps_curves.png" in plots and "cka_layers.png" in plots
    assert "accuracy.png" not in plots and not (tmp_path / "accuracy.png").exists()
    summary = list(csv.DictReader(open(tmp_path / "summary.csv")))
    null = [r for r in summary if r["measure"] == "cka" and r["layer"] == "2"][0]
    assert float(null["shuffled_input_mean"]) < float(null["same_task_mean"])  # the null is lower


def test_weightsim_htt_takes_a_compare_measure(tiny_zoo, tmp_path):
    from weightsim.stages.htt import htt_stage

    with composed(*TINY, "protocol.repeats=1", "protocol.measures=[chain_gram,cka]", f"zoo_dir={tiny_zoo}") as cfg:
        htt_stage(cfg, run_dir=tmp_path)
    rows = json.loads((tmp_path / "report.json").read_text())
    assert {r["measure"] for r in rows} == {"chain_gram", "cka"}


def test_bad_compare_input_is_one_error_line(tiny_zoo, tmp_path):
    base = (*TINY, *FAST, f"zoo_dir={tiny_zoo}", f"hydra.run.dir={tmp_path / 'run'}")
    line = only_error_line(run_cli("compare", *base, "compare.measures=[cka]", "measure.cka.layers=[2,nope]"))
    assert "no layer 'nope'" in line and "measure.cka.layers" in line and "logits" in line

    def compare_with_zoo(name: str, zoo_override: str, *compare_overrides: str) -> str:
        """Train a zoo of the same tasks with one override; the error line of comparing against it."""
        zoo = train_zoo(tmp_path / name, *TINY, zoo_override)
        return only_error_line(run_cli("compare", *base, *compare_overrides, f"eval_zoo_dir={zoo}"))

    # fewer test inputs: the probes differ in size
    line = compare_with_zoo("few", "dataset.test_fraction=0.1", "compare.measures=[cka]", "measure.cka.probe=400")
    assert "probe inputs" in line and "measure.cka.probe<=" in line
    # the same widths without biases: chains pair up, weight matching refuses the two architectures
    line = compare_with_zoo("nobias", "arch.bias=false", "compare.measures=[weight_matching]", "protocol.train_seeds=2")
    assert "one architecture" in line and "same arch config" in line
    # retrieval alone would read the other zoo's nets while compare.csv reads zoo_dir's: refused
    line = compare_with_zoo("wide", "arch.hidden=6", "compare.measures=[cka]", "protocol.protocols=[retrieval]")
    assert line == (f"error: zoo_dir {tiny_zoo} holds arch 'mlp' [64] and eval_zoo_dir {tmp_path / 'wide'} arch "
                    f"'mlp' [64] of another arch config: weightsim-compare reads retrieval from eval_zoo_dir but "
                    f"compare.csv from zoo_dir, so it needs one architecture in both (the same arch config); test "
                    f"across architectures with weightsim-htt zoo_dir=... eval_zoo_dir=...")


@pytest.mark.parametrize("override,expected", [
    ("measure.cka.layers=[]", "error: measure.cka.layers=[] names no layer: name some (module names, logits) or "
                              "set measure.cka.layers=null for every layer"),
    ("compare.measures=[cka,foo]", "error: unknown compare.measures entry 'foo': choose from "),
    ("compare.probe=64", "error: compare.probe moved to the measure's own settings: set measure.cka.probe and "
                         "measure.match.probe (e.g. measure.cka.probe=64)"),
])
def test_compare_settings_name_their_key(tmp_path, override, expected):
    """Checked before any zoo is read: an empty layer list is not silently every layer, an unknown
    measure names compare.measures (not protocol.measures, which compare does not read), and a key
    that moved into a measure's own group names its new key."""
    line = only_error_line(run_cli("compare", override, f"zoo_dir={tmp_path / 'none'}", f"hydra.run.dir={tmp_path}",
                                   "logger=none"))
    assert line.startswith(expected), line


def test_cka_layer_matrix_of_a_conv_zoo_flattens_each_layer_per_input(zoos):
    """Conv layers of different map sizes: the layer x layer CKA compares one vector per probe input."""
    from weightsim.compare.run import CompareConfig, cka_layers, pair_nets

    zoo = zoos["plain_bn"]
    m = make_measure("cka", {"probe": 30})
    cc = CompareConfig(seeds=2)
    matrix, rate, names = cka_layers(zoo, m, cc)
    assert matrix.shape == (len(names), len(names)) == (4, 4) and 0 <= rate <= 1
    a, b = (m.layers(zoo, r) for r in zoo.select(task=0)[:2])
    i, j = 0, 2  # maps of different sizes
    assert a[i].shape[0] != a[j].shape[0]
    pairs, _ = pair_nets(zoo, cc)  # the same-task pairs of usable nets: the mean over them
    assert len(pairs) >= 2
    want = np.mean([linear_cka(m.layers(zoo, p)[i].reshape(30, -1), m.layers(zoo, q)[j].reshape(30, -1))
                    for p, q in pairs])
    assert matrix[i, j] == pytest.approx(want, abs=1e-12)


def test_a_measure_that_cannot_rank_gets_no_p_value_below_chance():
    """All distances tied (a match distance of 1 for every pair): rank-1 is one gallery net's task for
    every query, exactly what every permutation of the gallery labels gives, so p = 1 (the float32
    hit rate must not sit above the float64 null)."""
    from weightsim.htt.protocols import cmc_curve, retrieval_null
    from weightsim.htt.stats import permutation_p_value

    q, g = torch.arange(5).repeat_interleave(6), torch.arange(5).repeat_interleave(4)
    dist = torch.ones(len(q), len(g))
    observed = float(cmc_curve(dist, q, g, 5)[0])
    null = retrieval_null(dist, q, g, 99)
    assert observed == pytest.approx(0.2) and torch.allclose(null, torch.full((99,), 0.2, dtype=torch.float64))
    assert permutation_p_value(observed, null.numpy()) == 1.0
    dist[torch.arange(len(q)), torch.arange(len(q)) % len(g)] = 0  # not vacuous: a ranking that beats chance
    assert permutation_p_value(float(cmc_curve(dist, q, g, 5)[0]), retrieval_null(dist, q, g, 99).numpy()) < 1


def test_weight_matching_pairs_are_read_in_either_order(zoos):
    """HTT may match (B, A) first (a test net against a training net); the pairs then ask for (A, B):
    the same distances, the naive distance, and a barrier against B aligned to A."""
    from weightsim.compare.run import CompareConfig, pair_rows

    zoo = zoos["mlp"]
    wm = make_measure("weight_matching")
    rows = zoo.select(task=0)
    wm.distances(zoo, rows[::-1], zoo, rows)
    first = dict(wm.values)
    out = pair_rows(zoo, [wm], CompareConfig(seeds=2, barrier_pairs=1))
    assert wm.values.keys() >= first.keys()
    same = [r for r in out if r["relation"] == "same_task" and r["task_a"] == 0]
    naive = [r["value"] for r in same if r["measure"] == "weight_naive"]
    net_a, net_b = zoo.nets(rows[:2])
    want = float(torch.sqrt(sum(((net_a.state_dict()[k].double() - v.double()) ** 2).sum()
                                for k, v in net_b.state_dict().items())))
    assert naive == [pytest.approx(want, rel=1e-9)]
    assert {r["measure"] for r in out} == {"weight_matching", "weight_naive", "barrier_naive", "barrier_aligned"}
