"""Real Hydra commands: config composition, a seconds-long end-to-end run, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf

from tests.conftest import TINY, composed, run_cli, train_zoo
from weightsim.cli import CONF, GROUPS, choices
from weightsim.stages import register_configs

register_configs()  # the structured configs (zoo, ...), as the CLI does before Hydra starts


def all_group_choices():
    return [(g, c) for g in GROUPS for c in choices(g)]


@pytest.mark.parametrize("group,choice", all_group_choices())
def test_every_config_group_option_composes(group, choice):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"{group}={choice}"], return_hydra_config=True)
    for g in ("dataset", "arch", "zoo", "classifier", "protocol"):
        assert g in cfg, f"{group}={choice} dropped the {g} group"
    for g in ("dataset", "arch"):  # the builders must exist (they are instantiated in every run)
        target = cfg[g]["_target_"]
        assert target.startswith("weightsim."), target
        (get_class if target.split(".")[-1][0].isupper() else get_method)(target)
    OmegaConf.to_container(cfg.protocol, resolve=True)


def test_overrides_reach_every_value():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["zoo.seeds=50", "arch.hidden=64", "protocol.alpha=0.01",
                                           "experiment=demo"])
    assert (cfg.zoo.seeds, cfg.arch.hidden, cfg.protocol.alpha) == (50, 64, 0.01)  # the command line wins
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=demo", "zoo.epochs=7"])
    assert (cfg.zoo.seeds, cfg.zoo.epochs, cfg.dataset.train_tasks) == (30, 7, 10)


def test_weightsim_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", *TINY, f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads((out / "report.json").read_text())
    assert len(rows) == 2 * 2 * (4 + 1)  # protocol x measure (chain_gram, raw) x (4 chains + overall row)
    for r in rows:
        assert {"protocol", "chain", "measure", "accuracy", "error", "alpha", "decision"} <= set(r)
        assert r["decision"] in ("accept", "reject") and abs(r["accuracy"] + r["error"] - 1) < 1e-9
        assert r["alpha"] == 0.05 and r["p_value"] is not None
    assert {r["protocol"] for r in rows} == {"classification", "retrieval"}
    for name in ("report.md", "report.csv", "cmc.csv", "accuracy.png", "cmc.png", "run.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((out / "run.json").read_text())
    assert meta["training_tasks"] == 3 and meta["unseen_tasks"] == 2 and meta["train_seeds_per_task"] == 3
    assert "| protocol | measure | chain |" in res.stdout  # the table is printed at the end
    # Lightning's INFO banners stay off the terminal (cli.quiet, set when the stage imports Lightning)
    assert "GPU available" not in res.stdout + res.stderr and "Tip:" not in res.stdout + res.stderr
    assert len(list((out / "zoo" / "weights").glob("*.safetensors"))) >= 1
    # weightsim-htt alone on the zoo just written, in another run dir, gives the same rows
    again = run_cli("htt", *TINY, f"zoo_dir={out / 'zoo'}", f"hydra.run.dir={tmp_path / 'htt'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "htt" / "report.json").read_text()) == rows


def one_line_error(res) -> str:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, res.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("override,expect", [
    ("dataset=imagenet9000", "unknown dataset 'imagenet9000': choose from "),
    ("arch=transformer", "unknown arch 'transformer': choose from "),
])
def test_unknown_choice_lists_the_choices(tmp_path, override, expect):
    line = one_line_error(run_cli("run", override, f"hydra.run.dir={tmp_path}"))
    assert expect in line
    group = override.split("=")[0]
    assert all(c in line for c in choices(group))


def test_a_renamed_setting_names_its_new_spelling(tmp_path):
    line = one_line_error(run_cli("htt", "chains.fold_bn=true", f"zoo_dir={tmp_path}", f"hydra.run.dir={tmp_path}"))
    assert "chains.fold_bn is gone" in line and "chains.bn=fold" in line


@pytest.mark.parametrize("alpha", ["0", "1", "1.5", "-0.2"])
def test_alpha_outside_unit_interval(tmp_path, alpha):
    line = one_line_error(run_cli("htt", f"protocol.alpha={alpha}", f"zoo_dir={tmp_path}", f"hydra.run.dir={tmp_path}"))
    assert "protocol.alpha" in line and "(0, 1)" in line


@pytest.mark.parametrize("app,override,expect", [
    ("htt", "protocol.feature_budget_gb=0", "protocol.feature_budget_gb=0.0 must be > 0"),
    ("zoo", "zoo.vectorize=wide", "zoo.vectorize='wide': choose from auto, stacked, vmap, loop"),
])
def test_bad_zoo_and_protocol_settings_say_what_to_change(tmp_path, app, override, expect):
    res = run_cli(app, *TINY, override, f"zoo_dir={tmp_path / 'z' if app == 'zoo' else tmp_path}",
                  f"hydra.run.dir={tmp_path}")
    line = one_line_error(res)
    assert expect in line, line


def test_missing_zoo_dir(tmp_path):
    line = one_line_error(run_cli("htt", f"zoo_dir={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path}"))
    assert "nope" in line and "does not exist" in line


def test_more_training_seeds_than_exist(tmp_path):
    res = run_cli("run", *TINY, "protocol.train_seeds=8", f"hydra.run.dir={tmp_path}")
    line = one_line_error(res)
    assert "8 training seeds per task" in line and "zoo.seeds" in line


def test_cross_network_evaluation_on_the_chains_both_nets_have(tmp_path):
    """Train on a 4-layer MLP zoo, test on a 3-layer one (same tasks): a config override, run on
    the chains both have; a chain that exists in one net only is refused by name."""
    from weightsim.stages.htt import htt_stage

    a, b = train_zoo(tmp_path / "a", *TINY), train_zoo(tmp_path / "b", *TINY, "arch.depth=3")
    out = tmp_path / "cross"
    with composed(*TINY, f"zoo_dir={a}", f"eval_zoo_dir={b}") as cfg:
        htt_stage(cfg, run_dir=out)
    rows = json.loads((out / "report.json").read_text())
    normalized = {r["chain"] for r in rows if r["measure"] == "chain_gram"} - {"all"}
    raw = {r["chain"] for r in rows if r["measure"] == "raw"} - {"all"}
    assert normalized == {1, 2, 3}  # every MLP chain Gram is 64 x 64; chain 4 exists in A only
    assert raw == {1, 2}  # layer 3 is 8x8 in A, 2x8 (the output layer) in B
    assert json.loads((out / "run.json").read_text())["eval_zoo_dir"] == str(b)
    line = one_line_error(run_cli("htt", *TINY, f"zoo_dir={a}", f"eval_zoo_dir={b}", "protocol.chains=[4]",
                                  f"hydra.run.dir={tmp_path / 'bad'}"))
    assert "chain(s) [4] do not exist in both nets" in line and "protocol.chains" in line


def test_more_queries_than_unseen_seeds_names_the_queries(tmp_path):
    line = one_line_error(run_cli("run", *TINY, "protocol.queries=5", f"hydra.run.dir={tmp_path}"))
    assert "5 queries per task" in line and "gallery seed" in line and "protocol.queries" in line


def test_zoo_chains_classifier_protocol_defaults_are_their_dataclasses():
    """One source of defaults: the composed config of these groups is exactly the dataclass's
    defaults (no YAML copy under conf/ to drift), and a value of the wrong type is refused."""
    from dataclasses import asdict

    from weightsim.stages import structured_configs

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg, recover = compose("config"), compose("recover")  # ec: the settings of weightsim-recover
        for (group, _), node in structured_configs().items():
            assert not (CONF / group).exists(), f"conf/{group}/ would be a second copy of {node.__name__}"
            key = group.replace("/", ".")  # measure/cka: the node measure.cka
            composed = OmegaConf.select(cfg, key) if OmegaConf.select(cfg, key) is not None else recover[key]
            assert OmegaConf.to_container(composed) == asdict(node()), group
        with pytest.raises(Exception, match="zoo.seeds=many"):
            compose("config", overrides=["zoo.seeds=many"])
