"""Negative control: a zoo in which every task is the same class pair on the same data, only the
task id (and so each net's seed stream) differs. Nothing tells the tasks apart, so HTT must not
accept H0 on any chain, and the normalized chains' accuracy must sit near chance."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest

from weightsim.chains import ChainOptions
from weightsim.data.digits import digits
from weightsim.data.tasks import TaskSet
from weightsim.htt.run import run_htt
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
from weightsim.nets.mlp import MLP
from weightsim.zoo.generate import ZooConfig, generate_zoo
from weightsim.zoo.store import ZooReader

TRAIN, UNSEEN, SEEDS = 4, 2, 10


def identical_tasks_zoo(root):
    base = digits(train_tasks=2, unseen_tasks=0)
    one = base.tasks[0]  # one class pair, one fixed sample split
    tasks = [replace(one, id=i, role="train" if i < TRAIN else "unseen") for i in range(TRAIN + UNSEEN)]
    taskset = TaskSet(base.name, base.x, base.y, tasks, base.input_shape, base.classes_per_task, base.info)
    build = partial(MLP, input_shape=taskset.input_shape, num_classes=2, hidden=16, depth=3)
    ident = {"dataset": {"name": "digits-identical-tasks", "config": {}},
             "arch": {"name": "mlp", "config": {"_target_": "weightsim.nets.mlp.MLP", "hidden": 16, "depth": 3}},
             "tasks": [t.meta() for t in tasks], "config_hash": "control", "input_shape": [64], "num_classes": 2}
    zc = ZooConfig(seeds=SEEDS, epochs=5, accelerator="cpu")
    return generate_zoo(build, taskset, zc, root, ident, progress=False)


def test_identical_tasks_are_never_accepted_and_sit_at_chance(tmp_path):
    root = identical_tasks_zoo(tmp_path / "zoo")
    pc = ProtocolConfig(queries=3, n_permutations=99, retrieval_permutations=999, repeats=3)
    res = run_htt(str(root), pc, ClassifierConfig(max_iter=200), ChainOptions(), progress=False)
    rows = res["rows"]
    assert {r["measure"] for r in rows} == {"chain_gram", "raw"}
    assert {r["protocol"] for r in rows} == {"classification", "retrieval"}
    for r in rows:  # every chain, both measures, both protocols, and the overall rows
        assert r["decision"] == "reject" and r["decision_bound"] == "reject", r
    chance = {"classification": 1 / TRAIN, "retrieval": 1 / UNSEEN}  # retrieval: 7 of 14 gallery nets match
    for r in (r for r in rows if r["measure"] == "chain_gram" and r["chain"] != "all"):
        assert abs(r["accuracy_mean"] - chance[r["protocol"]]) < 0.2, r  # near chance over the repeated splits
        assert r["p_value"] > 0.01, r
        assert r["effect_size"] == pytest.approx(1.0, abs=0.15), r  # tasks no farther apart than seeds
    # the trained nets did learn their (one) task: the control fails for the right reason
    assert min(r["test_acc"] for r in ZooReader(root).rows) > 0.9
