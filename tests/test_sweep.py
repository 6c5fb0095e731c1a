"""Experiment sweeps: the paper's configs at both scales, a multirun that survives a failing job and
whose rerun completes only what is missing, and the collected table and figure."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import TINY, run_cli
from weightsim.config import CONF, choices
from weightsim.stages import register_configs
from weightsim.report.paper import PAPER, paper_value

register_configs()

EXPERIMENTS = ["fig2_tiny_imagenet", "fig3_cifar100", "table1_namedata", "fig4_factors", "fig5_cross_network",
               "table2_resnet_mlp12"]


def test_every_paper_item_is_an_experiment_with_paper_numbers():
    assert set(EXPERIMENTS) <= set(choices("experiment")) and "_paper" not in choices("experiment")
    assert set(PAPER) == set(EXPERIMENTS)
    # ResNet-MLP-12: the paper's chain c (residual layers only) is our chain c + 1
    assert paper_value("table2_resnet_mlp12", "resnet_mlp12", "classification", "chain_gram", 10)["value"] == 0.997
    assert paper_value("table2_resnet_mlp12", "resnet_mlp12", "classification", "chain_gram", 9) is None
    assert paper_value("fig2_tiny_imagenet", "mlp4", "retrieval", "raw", 1)["value"] == pytest.approx(0.853)


@pytest.mark.parametrize("scale,seeds,blocks", [("cpu", 10, "0"), ("paper", 25, "0,25,50,75")])
def test_scale_sizes_an_experiment(scale, seeds, blocks):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=fig4_factors", f"scale={scale}"], return_hydra_config=True)
    assert cfg.zoo.seeds == seeds and str(cfg.seed_blocks).replace(" ", "") == blocks
    assert cfg.dataset._target_.endswith("cifar100") and cfg.sweep.htt and cfg.sweep.collect
    assert cfg.hydra.sweeper.params.arch == "plainnet5,plainnet6,resnet5,plainnet5_leaky"
    # the sweeper resolves the sweep dir before any job (no ${hydra:...} there), one per experiment and scale
    assert cfg.hydra.sweep.dir == f"multirun/fig4_factors-{scale}"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=table1_namedata", f"scale={scale}"])
    assert cfg.zoo.lr_drops == [0.7] and cfg.zoo.lr == 0.1 and cfg.zoo.steps == (10000 if scale == "paper" else 400)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # outside an experiment: no sizes
        cfg = compose("config", overrides=["dataset=cifar100"])
    assert cfg.zoo.seeds == 30 and "seed_blocks" not in cfg


def test_an_experiments_own_values_win_over_its_size_file():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=curve_seeds"], return_hydra_config=True)
    assert cfg.hydra.runtime.choices.size == "tiny_imagenet_cpu" and cfg.dataset.train_tasks == 7  # the size file
    assert cfg.zoo.seeds == 38  # curve_seeds' own value (tiny_imagenet_cpu sets 16)


def sweep(tmp_path: Path, *extra: str):
    return run_cli("run", "-m", "arch=mlp,mlp4", "sweep.htt=true", "sweep.collect=true", "name=fig3_cifar100",
                   f"zoo_dir={tmp_path}/zoos/${{hydra:runtime.choices.arch}}", f"hydra.sweep.dir={tmp_path}/run",
                   *TINY, "protocol.retrieval_permutations=99",
                   "protocol.repeats=2", *extra)


def test_a_failing_job_does_not_stop_the_sweep_and_a_rerun_completes_only_it(tmp_path):
    bad = tmp_path / "zoos" / "mlp4"
    bad.mkdir(parents=True)
    (bad / "zoo.json").write_text("{ not json")  # a corrupt zoo: the mlp4 job fails
    first = sweep(tmp_path)
    assert first.returncode == 1, first.stderr[-2000:]
    assert "error: job #1 (" in first.stderr and "zoo.json" in first.stderr  # at once, as the job fails
    assert "failed: job arch=mlp4" in first.stderr and "failed: htt mlp4: skipped" in first.stderr
    run = tmp_path / "run"
    status = json.loads((run / "sweep.json").read_text())
    assert [(j["job"].split(",")[0], j["status"]) for j in status["jobs"]] == [("arch=mlp", "ok"), ("arch=mlp4", "failed")]
    assert {r["label"]: r["status"] for r in status["htt"]} == {"mlp": "ok", "mlp4": "skipped"}
    assert (run / "collected" / "table.md").is_file()  # what finished is collected

    kept = {p: p.stat().st_mtime_ns for p in [*(tmp_path / "zoos" / "mlp").rglob("*.safetensors"),
                                               run / "htt" / "mlp" / "report.json"]}
    (bad / "zoo.json").unlink()
    second = sweep(tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing finished was redone
    status = json.loads((run / "sweep.json").read_text())
    assert all(j["status"] == "ok" for j in status["jobs"]) and all(r["status"] == "ok" for r in status["htt"])
    assert any("up to date" in r.get("note", "") for r in status["htt"])
    rows = list(csv.DictReader(open(run / "collected" / "table.csv")))
    assert {r["net"] for r in rows} == {"mlp", "mlp4"}
    assert {(r["protocol"], r["measure"]) for r in rows} == {(p, m) for p in ("classification", "retrieval")
                                                             for m in ("chain_gram", "raw")}
    for r in rows:
        assert 0 <= float(r["ours"]) <= 1 and r["decision"] in ("accept", "reject")
        # beside every HTT number, the task nets it tested: their steps, train loss and accuracies
        assert int(r["steps"]) > 0 and float(r["train_loss"]) > 0 and 0 < float(r["test_acc"]) <= 1
    for net in ("mlp", "mlp4"):  # the same as the zoo's own record
        zoo = [z for z in csv.DictReader(open(tmp_path / "zoos" / net / "manifest.csv")) if z["diverged"] == "False"]
        mine = next(r for r in rows if r["net"] == net)
        assert int(mine["steps"]) == int(zoo[0]["steps"])
        assert abs(float(mine["test_acc"]) - sum(float(z["test_acc"]) for z in zoo) / len(zoo)) < 1e-9
    assert "| net | SGD steps | train loss | train acc | test acc |" in (run / "collected" / "table.md").read_text()
    # the paper's number beside ours (name=fig3_cifar100: "about 98 %" for chain Grams)
    assert {r["paper"] for r in rows if r["measure"] == "chain_gram" and r["net"] == "mlp4"} == {"0.98"}
    assert {r["paper"] for r in rows if r["net"] == "mlp"} == {""}  # the paper has no plain "mlp"
    assert (run / "collected" / "figure.png").stat().st_size > 10_000
    again = run_cli("collect", str(run))  # on its own
    assert again.returncode == 0 and "| mlp4 | classification | chain_gram |" in again.stdout


@pytest.mark.slow  # (~25 s; the default suite covers cross-network HTT in test_cli and the sweep in the test above)
def test_cross_from_tests_one_zoos_classifier_on_the_others(tmp_path):
    out = sweep(tmp_path, "sweep.cross_from=mlp", "protocol.protocols=[classification]", "protocol.repeats=1")
    assert out.returncode == 0, out.stderr[-2000:]
    labels = {r["label"]: r for r in json.loads((tmp_path / "run" / "sweep.json").read_text())["htt"]}
    assert set(labels) == {"mlp", "mlp4", "mlp-on-mlp4"}
    meta = json.loads((tmp_path / "run" / labels["mlp-on-mlp4"]["run_dir"] / "run.json").read_text())
    assert meta["zoo_dir"].endswith("zoos/mlp") and meta["eval_zoo_dir"].endswith("zoos/mlp4")
    nets = {r["net"] for r in csv.DictReader(open(tmp_path / "run" / "collected" / "table.csv"))}
    assert nets == {"mlp", "mlp4", "mlp->mlp4"}


def test_collect_without_a_sweep_says_what_it_reads(tmp_path):
    out = run_cli("collect", str(tmp_path))
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "sweep.json" in out.stderr
    assert out.stderr.count("\n") == 1


def test_a_sweep_over_one_numeric_setting_is_a_curve():
    from weightsim.report.collect import numeric_setting, variant_label

    rows = [{"variant": v} for v in ("protocol.train_seeds=4", "protocol.train_seeds=16")]
    assert numeric_setting(rows) == "protocol.train_seeds"
    assert numeric_setting([{"variant": "chains.bn=ignore"}, {"variant": "chains.bn=invariant"}]) is None
    assert numeric_setting([{"variant": ""}]) is None
    assert variant_label({"variant": "arch=mlp4,protocol.train_seeds=8"}) == "protocol.train_seeds=8"


def test_a_job_that_never_finished_counts_as_failed(tmp_path):
    from weightsim.sweep import read_jobs

    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "job.json").write_text(json.dumps({"num": 0, "app": "?", "status": "started", "error": None}))
    [job] = read_jobs(tmp_path)
    assert job["status"] == "failed" and "did not finish" in job["error"]
