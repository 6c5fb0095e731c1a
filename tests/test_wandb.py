"""logger=wandb, offline (no account, no network): real CLI jobs, their runs read back from the
.wandb files; the summary values against the report and the zoo manifest they came from."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY, run_cli
from weightsim.report.dashboard import PANELS, main, panel_values
from weightsim.report.wandb_log import zoo_labels
from weightsim.report.wandb_read import offline_runs, read_offline_run
from weightsim.zoo.store import ZooReader

OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
WANDB = [o for o in TINY if not o.startswith("logger=")] + ["logger=wandb"]


@pytest.fixture(scope="module")
def run_job(tmp_path_factory):
    """One weightsim-run job (zoo then HTT) with logger=wandb: (run dir, its one wandb run)."""
    out = tmp_path_factory.mktemp("wandb") / "run"
    res = run_cli("run", *WANDB, f"hydra.run.dir={out}", env=OFFLINE)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = offline_runs(out)
    assert len(runs) == 1, [r["path"] for r in runs]
    return out, runs[0]


def test_run_is_named_grouped_tagged_from_the_hydra_choices(run_job):
    _, run = run_job
    assert run["group"] == "adhoc-digits-mlp(hidden=8)"  # no experiment chosen; arch.hidden=8 differs from mlp.yaml
    assert run["name"] == "run-adhoc-digits-mlp(hidden=8)-s0-4"  # stage, group, seed block [0, 5)
    assert set(run["tags"]) == {"experiment:adhoc", "dataset:digits", "arch:mlp", "stage:run"}
    config = run["config"]  # the full resolved config, plus the choices and the zoo labels
    assert config["zoo"]["seeds"] == 5 and config["arch"]["hidden"] == 8 and config["protocol"]["queries"] == 2
    assert config["choices"]["dataset"] == "digits" and config["stage"] == "run"
    assert config["zoo_arch"] == config["eval_zoo_arch"] == "mlp(hidden=8)" and config["cross"] is False


def test_htt_summary_has_every_chain_with_the_report_values(run_job):
    out, run = run_job
    summary, rows = run["summary"], json.loads((out / "report.json").read_text())
    assert len(rows) == 20  # 2 protocols x 2 measures x (4 chains + overall)
    for r in rows:
        key = f"{r['protocol']}/{r['measure']}/" + ("all" if r["chain"] == "all" else f"chain_{r['chain']}")
        assert 0 <= summary[f"{key}/accuracy"] <= 1 and math.isclose(summary[f"{key}/accuracy"], r["accuracy"])
        assert math.isclose(summary[f"{key}/error"], r["error"])
        assert summary[f"{key}/decision"] == (r["decision"] == "accept")  # 1 / 0
        assert summary[f"{key}/decision"] in (0, 1)
        if r["p_value"] is not None:
            assert 0 <= summary[f"{key}/p_value"] <= 1 and math.isclose(summary[f"{key}/p_value"], r["p_value"])
    overall = [r for r in rows if r["chain"] == "all" and r["measure"] == "chain_gram"]
    assert summary["decision"] == all(r["decision"] == "accept" for r in overall)
    assert summary["decision_measure"] == "chain_gram"
    assert summary["accuracy"]["_type"] == "image-file" and summary["report"]["_type"] == "table-file"


def test_run_stage_logs_its_zoo(run_job):
    out, run = run_job
    s, nets = run["summary"], ZooReader(out / "zoo").rows
    assert s["zoo/nets"] == len(nets) == 25 and s["zoo/tasks"] == 5
    assert all(s[f"zoo/task_{t}/nets"] == 5 for t in range(5))
    assert s["zoo/diverged"] == sum(r["diverged"] for r in nets)
    assert sum(s["zoo/test_acc"]["values"]) == 25 and s["zoo/test_acc"]["_type"] == "histogram"
    assert math.isclose(s["zoo/train_acc_mean"], sum(r["train_acc"] for r in nets) / 25)


def test_zoo_multirun_gives_one_run_per_job(run_job, tmp_path):
    """Two seed blocks of another zoo in one -m sweep: two runs, each with its own block's nets."""
    zoo = tmp_path / "zoo"
    res = run_cli("zoo", "-m", *WANDB, "arch.hidden=6", "zoo.seeds=2", "zoo.seed_offset=0,2", "zoo.epochs=1",
                  f"zoo_dir={zoo}", f"hydra.sweep.dir={tmp_path / 'sweep'}", env=OFFLINE)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = offline_runs(tmp_path / "sweep")
    assert [r["name"] for r in runs] == ["zoo-adhoc-digits-mlp(hidden=6)-s0-1-j0",
                                         "zoo-adhoc-digits-mlp(hidden=6)-s2-3-j1"]
    assert {r["group"] for r in runs} == {"adhoc-digits-mlp(hidden=6)"} and "stage:zoo" in runs[0]["tags"]
    nets = ZooReader(zoo).rows
    for job, run in enumerate(runs):
        block = [r for r in nets if r["seed"] in (2 * job, 2 * job + 1)]
        s = run["summary"]
        assert s["zoo/nets"] == len(block) == 10 and s["zoo/diverged"] == sum(r["diverged"] for r in block)
        assert sum(s["zoo/train_acc"]["values"]) == sum(s["zoo/test_acc"]["values"]) == 10
        assert not any(k.startswith("classification/") for k in s)  # a zoo job has no HTT values
    assert runs[1]["summary"]["zoo/nets_on_disk"] == 20
    # an HTT of the first zoo's classifier on this zoo's nets would be cross-network, the labels say which
    labels = zoo_labels({"zoo_dir": str(run_job[0] / "zoo"), "eval_zoo_dir": str(zoo)})
    assert labels["cross"] and (labels["zoo_arch"], labels["eval_zoo_arch"]) == ("mlp(hidden=8)", "mlp(hidden=6)")


def test_dashboard_draws_fig4_from_offline_runs(run_job, tmp_path):
    out, run = run_job
    main([str(out), "--out", str(tmp_path)])
    report = json.loads((tmp_path / "dashboard.json").read_text())
    fig4 = report["panels"]["fig4_factors"]
    assert (tmp_path / "fig4_factors.png").read_bytes()[:4] == b"\x89PNG"
    assert "png" not in report["panels"]["fig5_cross"]  # no cross-network run
    got = {(v["protocol"], v["chain"]): v["accuracy"] for v in fig4["values"]}
    assert {v["group"] for v in fig4["values"]} == {"mlp(hidden=8)"}
    assert got == {(p, c): [run["summary"][f"{p}/chain_gram/chain_{c}/accuracy"]]
                   for p in ("classification", "retrieval") for c in (1, 2, 3, 4)}


def test_fig5_groups_cross_runs_by_train_and_eval_arch():
    def run(cross, eval_arch, acc):
        return {"config": {"stage": "htt", "cross": cross, "zoo_arch": "plainnet5", "eval_zoo_arch": eval_arch},
                "summary": {"classification/chain_gram/chain_1/accuracy": acc,
                            "classification/raw/chain_1/accuracy": 0.0}}
    runs = [run(True, "resnet5", 0.5), run(True, "resnet5", 0.7), run(True, "plainnet6", 0.9),
            run(False, "plainnet5", 1.0)]
    assert panel_values(runs, PANELS["fig5_cross"], "chain_gram") == {
        ("classification", "plainnet5 -> resnet5", 1): [0.5, 0.7],
        ("classification", "plainnet5 -> plainnet6", 1): [0.9]}
    assert panel_values(runs, PANELS["fig4_factors"], "chain_gram") == {("classification", "plainnet5", 1): [1.0]}


def test_reader_rejects_what_is_not_a_run_file(tmp_path):
    from weightsim.errors import DataError

    (tmp_path / "run-x.wandb").write_bytes(b"not a run")
    with pytest.raises(DataError, match="not a wandb run file"):
        read_offline_run(tmp_path)


def test_dashboard_without_runs_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "weightsim.report.dashboard", str(tmp_path)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"error: no wandb runs found in {tmp_path}: run the sweep with logger=wandb"


CLASSIFIER_HPARAMS = ("rank", "n_heads", "num_classes", "tag", "l2", "max_iter")


def test_run_config_is_the_composed_config_and_history_has_the_zoo_loss_curve(run_job):
    """No classifier fit writes its settings into the run config; the zoo's populations log their
    loss (throttled) and their accuracies; the summary has effect size and the repeats' sd; the
    choices hold only what was loaded (no size: digits_None without a scale)."""
    out, run = run_job
    config = run["config"]
    assert not set(CLASSIFIER_HPARAMS) & set(config), sorted(config)
    assert config["classifier"] == {"l2": 1.0, "max_iter": 100}  # the composed group, as set on the command line
    assert "size" not in config["choices"] and config["choices"]["arch"] == "mlp"
    losses = [h for h in run["history"] if "zoo/train_loss" in h]
    assert len(losses) >= 10 and all(math.isfinite(h["zoo/train_loss"]) for h in losses)
    for p in {h["zoo/population"] for h in losses}:  # one curve per population, over its steps
        curve = [h for h in losses if h["zoo/population"] == p]
        steps = [h["trainer/global_step"] for h in curve]
        assert steps == sorted(set(steps)) and curve[-1]["zoo/train_loss"] < curve[0]["zoo/train_loss"]  # it trained
    nets = ZooReader(out / "zoo").rows
    accs = [h for h in run["history"] if "zoo/population_test_acc" in h]
    assert len(accs) == len({h["zoo/population"] for h in losses})
    if len(accs) == 1:
        assert math.isclose(accs[0]["zoo/population_test_acc"], sum(r["test_acc"] for r in nets) / len(nets))
    rows = json.loads((out / "report.json").read_text())
    for r in rows:
        key = f"{r['protocol']}/{r['measure']}/" + ("all" if r["chain"] == "all" else f"chain_{r['chain']}")
        for value in ("effect_size", "accuracy_sd"):
            if r[value] is not None and math.isfinite(r[value]):
                assert math.isclose(run["summary"][f"{key}/{value}"], r[value])
    assert any(k.endswith("/accuracy_sd") for k in run["summary"]) and any(k.endswith("/effect_size")
                                                                          for k in run["summary"])
    # each classifier fit is one value: in run.json's fits, not a one-point series per fit in the history
    assert not [k for h in run["history"] for k in h if k.startswith("classifier/")]
    meta = json.loads((out / "run.json").read_text())
    fits = meta["fits"]
    feature_rows = [r for r in rows if r["chain"] != "all" and r["protocol"] == "classification"]
    assert len(fits) == len(feature_rows) * meta["repeats"] and all(f["objective"] > 0 for f in fits)


def test_csv_logger_hparams_are_the_composed_config_and_metrics_have_the_loss(tmp_path):
    import csv

    import yaml

    out = tmp_path / "run"
    res = run_cli("run", *[o for o in TINY if not o.startswith("logger=")], "logger=csv", "protocol.repeats=1",
                  f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    (hparams,) = out.glob("logs/version_*/hparams.yaml")
    config = yaml.safe_load(hparams.read_text())
    assert not set(CLASSIFIER_HPARAMS) & set(config) and config["zoo"]["seeds"] == 5
    with open(hparams.parent / "metrics.csv") as f:
        metrics = list(csv.DictReader(f))
    assert sum(bool(m.get("zoo/train_loss")) for m in metrics) >= 10
    assert any(m.get("zoo/population_test_acc") for m in metrics)


def test_dashboard_groups_by_any_choice_or_config_key():
    def run(arch, seeds, acc):
        return {"config": {"stage": "run", "cross": False, "zoo_arch": "mlp(hidden=8)", "choices": {"arch": arch},
                           "zoo": {"seeds": seeds}},
                "summary": {"classification/chain_gram/chain_1/accuracy": acc}}
    runs = [run("mlp", 10, 0.5), run("mlp", 30, 0.9), run("mlp", 30, 0.7)]
    assert panel_values(runs, PANELS["fig4_factors"], "chain_gram") == {
        ("classification", "mlp(hidden=8)", 1): [0.5, 0.9, 0.7]}  # by arch alone: one bar
    assert panel_values(runs, PANELS["fig4_factors"], "chain_gram", ["arch", "zoo.seeds"]) == {
        ("classification", "arch=mlp, zoo.seeds=10", 1): [0.5],
        ("classification", "arch=mlp, zoo.seeds=30", 1): [0.9, 0.7]}


def test_dashboard_by_a_key_no_run_has_is_one_line(run_job, tmp_path):
    out, _ = run_job
    res = subprocess.run([sys.executable, "-m", "weightsim.report.dashboard", str(out), "--by", "zoo.sedes",
                          "--out", str(tmp_path)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: --by zoo.sedes: no run has this choice or config key; choices: ")
    assert "arch" in res.stderr and not list(tmp_path.glob("*.png"))
    main([str(out), "--out", str(tmp_path), "--by", "arch,zoo.seeds"])  # the run's own values: one group
    groups = {v["group"] for v in json.loads((tmp_path / "dashboard.json").read_text())["panels"]["fig4_factors"]["values"]}
    assert len(groups) == 1 and groups.pop().startswith("arch=")
