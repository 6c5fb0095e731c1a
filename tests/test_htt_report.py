"""Report rows as the user reads them: report.md / csv / json columns, the legend, the overall row,
the plots keyed by measure, and the wandb table."""

from __future__ import annotations

import csv
import json

import numpy as np
import torch

from weightsim.htt.evaluate import Outcome
from weightsim.htt.rows import chain_row, overall_row
from weightsim.htt.settings import ProtocolConfig
from weightsim.report import plot_accuracy, plot_cmc, write_report


def result(pc: ProtocolConfig) -> dict:
    rows, cmc = [], {}
    for measure, acc in (("chain_gram", 1.0), ("raw", 0.3)):
        for protocol, n, null in (("classification", 120, torch.full((99,), 0.1)),
                                  ("retrieval", 30, torch.full((9999,), 0.2))):
            curve = np.linspace(acc, 1.0, 10) if protocol == "retrieval" else None
            per_chain = [chain_row(protocol, measure, c, 2080, [Outcome(acc, n, 2.0, null, curve),
                                                                  Outcome(acc - 0.01 * c, n, 2.0)], pc)
                         for c in (1, 2)]
            rows += per_chain + [overall_row(per_chain)]
            if curve is not None:
                cmc.update({(c, measure): curve for c in (1, 2)})
    meta = {"repeats": 2, "bound_level": 1 - pc.alpha, "null_classification": "99 heads on shuffled task labels",
            "null_retrieval": "9999 permutations of the gallery's task labels", "chance_classification": 0.1,
            "warnings": ["retrieval skipped: example"],
            "measures": {"chain_gram": {"features": "Gram", "options": {"bias": False},
                                        "chains": [{"chain": 1, "remedy": "exact"}]},
                         "raw": {"features": "flattened"}}}
    return {"rows": rows, "cmc": cmc, "meta": meta}


def test_report_files_carry_the_measure_the_bound_and_the_overall_rows(tmp_path):
    pc = ProtocolConfig()
    res = result(pc)
    paths = write_report(tmp_path, res)
    rows = json.loads(paths["json"].read_text())
    first = rows[0]
    assert (first["measure"], first["chain"], first["p_value"]) == ("chain_gram", 1, 0.01)
    assert abs(first["error_upper_bound"] - (1 - 0.05 ** (1 / 120))) < 1e-9 and first["bound_level"] == 0.95
    assert first["accuracy_mean"] == (1.0 + 0.99) / 2 and first["accuracy_sd"] > 0
    assert [r["chain"] for r in rows if r["measure"] == "raw"] == [1, 2, "all"] * 2
    with open(paths["csv"]) as f:
        header = next(csv.reader(f))
    assert {"measure", "error_upper_bound", "decision_bound", "effect_size", "accuracy_sd"} <= set(header)
    assert "normalized" not in header and "error_ci_high" not in header
    assert paths["cmc"].read_text().splitlines()[0] == "chain,measure,rank,cmc"
    md = paths["md"].read_text()
    assert "| protocol | measure | chain | accuracy | accuracy_mean_sd | effect_size |" in md
    assert "| classification | chain_gram | all |" in md and "| 0.995 ± 0.007 |" in md
    for said in ("one-sided Clopper-Pearson upper bound on the error at level 0.95", "99 heads on shuffled task labels",
                 "9999 permutations of the gallery's task labels", "Algorithm 1", "## Warnings",
                 "retrieval skipped: example", "Per chain, how the chain_gram features were made"):
        assert said in md, said
    png = plot_accuracy(res["rows"], tmp_path / "acc.png", 0.1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_cmc(res["cmc"], tmp_path / "cmc.png").stat().st_size > 0


def test_wandb_logging_takes_rows_whose_chain_column_holds_all(tmp_path, monkeypatch):
    """wandb.Table checks each column's type: the overall rows' chain 'all' beside ints must pass."""
    from lightning.pytorch.loggers import WandbLogger

    import wandb
    from weightsim.report.wandb_log import log_htt

    monkeypatch.setenv("WANDB_MODE", "disabled")
    res = result(ProtocolConfig())
    logger = WandbLogger(project="weightsim-test", save_dir=str(tmp_path), mode="disabled")
    plot = plot_accuracy(res["rows"], tmp_path / "accuracy.png", 0.1)
    try:
        log_htt(logger, res, [plot])
    finally:
        wandb.finish()


def test_report_md_names_only_the_plots_the_run_wrote(tmp_path):
    """write_run (every stage's report files) ends report.md with the plots it is given, and none
    when a run wrote none; its tables are CSV with the given header even when empty."""
    from weightsim.report import write_run

    res = result(ProtocolConfig())
    png = plot_accuracy(res["rows"], tmp_path / "accuracy.png", 0.1)
    md = write_report(tmp_path, res, plots={png: "per-chain accuracy"})["md"].read_text().splitlines()
    assert md[-1] == "Plots: `accuracy.png` (per-chain accuracy)."
    paths = write_run(tmp_path / "bare", res["rows"], res["meta"], ["# bare"], tables={"empty": []},
                      columns={"empty": ["a", "b"]})
    assert paths["md"].read_text() == "# bare\n"
    assert paths["empty"].read_bytes() == b"a,b\r\n"  # the csv module's line ending, as every CSV of a run
    assert json.loads(paths["json"].read_text()) == res["rows"]
