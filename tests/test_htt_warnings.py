"""What HTT changes without being asked is said: retrieval skipped (and why), a chain sketched,
diverged nets lowering the training seeds; the CLI records the warnings in run.json and report.md."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from functools import partial
from pathlib import Path

import pytest

from tests.conftest import TINY, run_cli
from weightsim.chains import ChainOptions
from weightsim.data.digits import digits
from weightsim.errors import ConfigError, WeightsimWarning, ZooError
from weightsim.htt.run import run_htt
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
from weightsim.nets.mlp import MLP
from weightsim.zoo.generate import ZooConfig, generate_zoo


def small_zoo(root: Path, train_tasks: int, unseen_tasks: int, seeds: int = 5) -> Path:
    taskset = digits(train_tasks=train_tasks, unseen_tasks=unseen_tasks)
    build = partial(MLP, input_shape=taskset.input_shape, num_classes=2, hidden=8, depth=3)
    ident = {"dataset": {"name": "digits", "config": {}},
             "arch": {"name": "mlp", "config": {"_target_": "weightsim.nets.mlp.MLP", "hidden": 8, "depth": 3}},
             "tasks": [t.meta() for t in taskset.tasks], "config_hash": "w", "input_shape": [64], "num_classes": 2}
    return generate_zoo(build, taskset, ZooConfig(seeds=seeds, epochs=2, accelerator="cpu"), root, ident,
                        progress=False)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    return small_zoo(tmp_path_factory.mktemp("warn") / "zoo", 3, 2)


QUICK = dict(queries=2, n_permutations=3, retrieval_permutations=50, repeats=1)


def htt(zoo_dir, co: ChainOptions | None = None, **pc) -> dict:
    return run_htt(str(zoo_dir), ProtocolConfig(**{**QUICK, **pc}), ClassifierConfig(max_iter=100),
                   co or ChainOptions(), progress=False)


def test_retrieval_skipped_without_unseen_tasks_says_why(tmp_path):
    root = small_zoo(tmp_path / "zoo0", 3, 0)
    with pytest.warns(WeightsimWarning, match=r"retrieval skipped: the zoo has 0 unseen task\(s\).*dataset.unseen_tasks"):
        res = htt(root, measures=["chain_gram"])
    assert {r["protocol"] for r in res["rows"]} == {"classification"} and not res["cmc"]
    with pytest.warns(WeightsimWarning), pytest.raises(ConfigError, match="nothing to test.*add classification"):
        htt(root, protocols=["retrieval"])


def test_retrieval_switched_off_is_said_when_the_zoo_has_unseen_tasks(zoo):
    with pytest.warns(WeightsimWarning, match=r"retrieval skipped: protocol.protocols=\['classification'\] leaves "
                                              r"it out, although the zoo has 2 unseen task"):
        res = htt(zoo, protocols=["classification"], measures=["raw"])
    assert {r["protocol"] for r in res["rows"]} == {"classification"}


def test_a_sketched_chain_names_d_and_m_and_the_remedy(zoo):
    with pytest.warns(WeightsimWarning) as record:
        res = htt(zoo, ChainOptions(budget_mb=0.001, sketch_dim=16), measures=["chain_gram"], protocols=["classification"])
    text = " ".join(str(w.message) for w in record)
    assert "chain 1 (d_l = 64, exact Gram 0.02 MiB)" in text and "m = 16-row" in text
    assert "chains.budget_mb" in text and "chains.remedy=exact" in text
    assert res["meta"]["measures"]["chain_gram"]["chains"][0]["remedy"] == "sketch"
    # asked for: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightsimWarning)
        # (n_permutations=0: QUICK's 3 heads would be named as too few for alpha, rightly)
        htt(zoo, ChainOptions(remedy="sketch", sketch_dim=16), measures=["chain_gram"], chains=[1], n_permutations=0)


def test_diverged_nets_that_lower_the_training_seeds_are_named(zoo, tmp_path):
    """One net of task 1 flagged diverged (as the trainer flags it): 4 usable seeds instead of 5, so
    train_fraction 0.6 gives 2 training seeds per task instead of 3."""
    copy = tmp_path / "zoo"
    shutil.copytree(zoo, copy)
    piece = sorted((copy / "weights").glob("*.json"))[0]
    rows = json.loads(piece.read_text())
    hit = next(r for r in rows if r["task"] == 1 and r["role"] == "train")
    hit["diverged"] = True
    piece.write_text(json.dumps(rows))
    with pytest.warns(WeightsimWarning) as record:
        res = htt(copy, measures=["raw"], protocols=["classification"], chains=[1])
    said = [str(w.message) for w in record]
    assert any(re.match(r"diverged nets left out \(task 1: 1 of 5\) lowered the training seeds per task from 3 to 2 "
                        r"for every task.*protocol.train_seeds", m) for m in said), said
    assert res["meta"]["train_seeds_per_task"] == 2 and res["meta"]["diverged_excluded"] == 1


def test_short_tasks_drop_leaves_the_short_task_out_and_keeps_the_others_count(zoo, tmp_path):
    """Three of task 1's five nets flagged diverged: 2 usable. lower: every task trains on
    round(0.6 * 2) = 1 seed; drop: task 1 leaves HTT and the other two keep round(0.6 * 5) = 3."""
    copy = tmp_path / "zoo"
    shutil.copytree(zoo, copy)
    flagged = 0
    for piece in sorted((copy / "weights").glob("*.json")):
        rows = json.loads(piece.read_text())
        for r in rows:
            if r["task"] == 1 and r["role"] == "train" and flagged < 3:
                r["diverged"], flagged = True, flagged + 1
        piece.write_text(json.dumps(rows))
    assert flagged == 3
    quick = dict(measures=["raw"], protocols=["classification"], chains=[1])
    with pytest.warns(WeightsimWarning, match=r"lowered the training seeds per task from 3 to 1.*short_tasks=drop"):
        low = htt(copy, **quick)
    assert low["meta"]["train_seeds_per_task"] == 1 and low["meta"]["training_tasks"] == 3
    with pytest.warns(WeightsimWarning) as record:
        drop = htt(copy, short_tasks="drop", **quick)
    said = [str(w.message) for w in record]
    assert any(re.match(r"diverged nets left out \(task 1: 3 of 5\) left task\(s\) 1 with 3 or fewer usable nets: "
                        r"left out of HTT \(protocol.short_tasks=drop\), 2 training tasks remain", m) for m in said), said
    meta = drop["meta"]
    assert meta["train_seeds_per_task"] == 3 and meta["training_tasks"] == 2 and meta["chance_classification"] == 0.5
    assert meta["test_nets"] == 2 * 2  # tasks 0 and 2, 5 - 3 test nets each
    with pytest.warns(WeightsimWarning, match=r"left task\(s\) 1 with 3 or fewer"):  # an exact count: the same
        exact = htt(copy, short_tasks="drop", train_seeds=3, **quick)["meta"]
    assert exact["train_seeds_per_task"] == 3 and exact["training_tasks"] == 2
    with pytest.raises(ConfigError, match="unknown protocol.short_tasks 'keep': choose lower or drop"):
        htt(copy, short_tasks="keep", **quick)
    for piece in sorted((copy / "weights").glob("*.json")):  # a fourth: task 1 keeps one net, none to test
        rows = json.loads(piece.read_text())
        for r in rows:
            if r["task"] == 1 and r["role"] == "train" and not r["diverged"] and flagged < 4:
                r["diverged"], flagged = True, flagged + 1
        piece.write_text(json.dumps(rows))
    with pytest.raises(ZooError, match=r"task\(s\) 1 keep 1 usable net\(s\).*short_tasks=drop"):
        htt(copy, **quick)
    with pytest.warns(WeightsimWarning, match=r"left task\(s\) 1 with 3 or fewer"):
        assert htt(copy, short_tasks="drop", **quick)["meta"]["training_tasks"] == 2


def test_short_tasks_drop_leaves_short_unseen_tasks_out_of_retrieval(zoo, tmp_path):
    """Four of an unseen task's five nets flagged diverged: one usable net cannot both query
    (protocol.queries=2) and fill the gallery. lower: the split fails naming short_tasks=drop;
    drop: that task leaves retrieval, and with one unseen task left retrieval is skipped, as any
    one-task retrieval is."""
    copy = tmp_path / "zoo"
    shutil.copytree(zoo, copy)
    unseen = sorted({r["task"] for p in (copy / "weights").glob("*.json") for r in json.loads(p.read_text())
                     if r["role"] == "unseen"})
    flagged = 0
    for piece in sorted((copy / "weights").glob("*.json")):
        rows = json.loads(piece.read_text())
        for r in rows:
            if r["task"] == unseen[0] and flagged < 4:
                r["diverged"], flagged = True, flagged + 1
        piece.write_text(json.dumps(rows))
    quick = dict(measures=["raw"], chains=[1])
    with pytest.warns(WeightsimWarning), pytest.raises(ConfigError, match=r"2 queries per task, but task "
                                                                          rf"{unseen[0]} has only 1.*short_tasks=drop"):
        htt(copy, **quick)
    with pytest.warns(WeightsimWarning) as record:
        res = htt(copy, short_tasks="drop", **quick)
    said = [str(w.message) for w in record]
    assert any(m.startswith(f"unseen task(s) {unseen[0]} keep 2 or fewer usable nets") for m in said), said
    assert any(m.startswith("retrieval skipped: the zoo has 1 unseen task(s)") for m in said), said
    assert {r["protocol"] for r in res["rows"]} == {"classification"}


def test_a_net_with_weights_1e3_times_the_others_names_the_chain_and_the_fix(zoo, tmp_path):
    """One training net's first layer (weights and bias) scaled by 1e3: the ReLU net's function is its
    own (not function-preserving: it scales every logit), and chain 1's Gram grows 1e6-fold, so its
    features span over 1e4 x across nets; the unmodified zoo says nothing of the kind."""
    from safetensors.torch import load_file, save_file
    quick = dict(measures=["chain_gram"], protocols=["classification"], n_permutations=0, verify=False)
    with warnings.catch_warnings(record=True) as clean:
        warnings.simplefilter("always")
        htt(zoo, chains=[1], **quick)
    assert not any("feature norms span" in str(w.message) for w in clean)
    copy = tmp_path / "zoo"
    shutil.copytree(zoo, copy)
    file = sorted((copy / "weights").glob("*.safetensors"))[0]
    state = load_file(file)
    first = [k for k in state if k.endswith("weight")][0]
    for k in (first, first.replace("weight", "bias")):
        state[k][0] *= 1e3
    save_file(state, file)
    with pytest.warns(WeightsimWarning, match=r"per-net feature norms span more than 1e\+04 x across the nets on "
                                              r"chain_gram chain 1 \(.*chains.scale=fro"):
        htt(copy, chains=[1, 2], **quick)


def test_protocol_tasks_classifies_a_subset_of_the_training_tasks(zoo):
    """The task-count effect on one zoo: protocol.tasks=[0, 2] classifies 2 of the 3 training tasks
    (chance 1/2, their test nets only); a task the zoo lacks, or fewer than 2, is one clear error."""
    quick = dict(measures=["raw"], protocols=["classification"], chains=[1], n_permutations=0)
    meta = htt(zoo, tasks=[0, 2], **quick)["meta"]
    assert meta["training_tasks"] == 2 and meta["chance_classification"] == 0.5
    assert meta["test_nets"] == 2 * (5 - meta["train_seeds_per_task"])
    with pytest.raises(ConfigError, match=r"protocol.tasks names task\(s\) \[7\] that zoo .* choose from \[0, 1, 2\]"):
        htt(zoo, tasks=[0, 7], **quick)
    with pytest.raises(ConfigError, match=r"protocol.tasks=\[1\] must name at least 2 training tasks"):
        htt(zoo, tasks=[1], **quick)


def test_the_cli_records_htt_warnings_in_run_json_and_report(zoo, tmp_path):
    out = tmp_path / "run"
    res = run_cli("htt", *TINY, f"zoo_dir={zoo}", "protocol.protocols=[classification]", "chains.budget_mb=0.001",
                  "protocol.measures=[chain_gram]", "protocol.repeats=1", f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    warned = json.loads((out / "run.json").read_text())["warnings"]
    assert any(w.startswith("retrieval skipped: protocol.protocols") for w in warned), warned
    assert any("sketched by chains.remedy=auto" in w for w in warned), warned
    report = (out / "report.md").read_text()
    assert "## Warnings" in report and "retrieval skipped" in report
    assert sum(l.startswith("warning: ") for l in res.stderr.splitlines()) == len(warned)


def test_one_test_net_per_task_leaves_the_effect_size_undefined_not_a_crash(zoo):
    with pytest.warns(WeightsimWarning, match="retrieval skipped") as record:
        res = htt(zoo, train_seeds=4, measures=["raw"], protocols=["classification"], chains=[1])
    row, overall = res["rows"]
    assert row["n"] == 3 and row["effect_size"] is None and overall["effect_size"] is None
    assert any(str(w.message).startswith("one test net per task: classification's effect size") for w in record)


def test_too_few_training_nets_for_the_classifier_are_named(zoo):
    with pytest.warns(WeightsimWarning) as record:
        htt(zoo, train_seeds=2, measures=["raw"], protocols=["classification"], chains=[1])
    said = [str(w.message) for w in record if "training net(s) per task" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("only 2 training net(s) per task for the standardized weight "
                                                 "classifier (raw)"), said
    assert "protocol.train_seeds" in said[0] and "protocol.measures=[chain_gram_distance]" in said[0]
    with warnings.catch_warnings(record=True) as quiet:  # k-NN on distances fits no classifier: no warning
        warnings.simplefilter("always", WeightsimWarning)
        htt(zoo, train_seeds=2, measures=["chain_gram_distance"], protocols=["classification"], chains=[1])
    assert not any("training net(s) per task" in str(w.message) for w in quiet)


def test_diverged_unseen_nets_left_out_of_retrieval_are_named(zoo, tmp_path):
    """One net of an unseen task flagged diverged: retrieval runs on the rest and says so."""
    copy = tmp_path / "zoo"
    shutil.copytree(zoo, copy)
    piece = sorted((copy / "weights").glob("*.json"))[0]
    rows = json.loads(piece.read_text())
    hit = next(r for r in rows if r["role"] == "unseen")
    hit["diverged"] = True
    piece.write_text(json.dumps(rows))
    with pytest.warns(WeightsimWarning) as record:
        res = htt(copy, measures=["raw"], chains=[1])
    said = [str(w.message) for w in record]
    assert any(m.startswith(f"diverged nets left out of retrieval (task {hit['task']}: 1 of 5)") for m in said), said
    assert res["meta"]["gallery"] + res["meta"]["queries"] == 2 * 5 - 1  # 2 unseen tasks x 5 seeds, one left out


def test_weak_classification_and_the_retrieval_chance_level_are_said(zoo, tmp_path):
    """QUICK's 3 shuffled-label heads cannot give p < 0.05: said before the fits, naming the setting;
    report.md gives retrieval's chance level beside classification's (2 unseen tasks: 1/2)."""
    from weightsim.report import write_report

    with pytest.warns(WeightsimWarning) as record:
        res = htt(zoo, measures=["raw"], chains=[1])
    said = [str(w.message) for w in record]
    assert any(m.startswith("classification cannot show p < protocol.alpha=0.05: its smallest attainable p-value "
                            "is 0.25") and "protocol.n_permutations to 40 or more" in m for m in said), said
    assert res["meta"]["chance_retrieval"] == pytest.approx(0.5)
    md = (write_report(tmp_path, res)["md"]).read_text().splitlines()
    i = md.index(f"- chance_classification: {1 / 3}")
    assert md[i + 1] == "- chance_retrieval: 0.5", md[i:i + 2]
