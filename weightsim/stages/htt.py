"""The HTT stage (weightsim-htt, and weightsim-run after its zoo): hypothesis-training-testing on a
zoo, its report files and plots in the run directory, its results to the logger."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from weightsim.stages.job import container, output_dir

# the plots an HTT run writes: file name -> what it shows (report.md's last line)
PLOTS = {"accuracy.png": "per-chain accuracy, one bar per measure", "cmc.png": "CMC curves"}


def htt_stage(cfg: DictConfig, logger=None, notes: list[str] | None = None, run_dir: Path | None = None) -> dict:
    """run_htt on ``cfg.zoo_dir`` (tested on ``cfg.eval_zoo_dir`` when set); report.* and plots in
    ``run_dir`` (default: the job's run directory); ``notes``: the job's warnings, for the report."""
    from weightsim.chains import ChainOptions
    from weightsim.htt.run import ClassifierConfig, ProtocolConfig, run_htt
    from weightsim.trainer import TrainerConfig
    from weightsim.report import markdown_table, plot_accuracy, plot_cmc, write_report
    from weightsim.report.plots import chance_levels
    from weightsim.report.wandb_log import log_htt

    run_dir = Path(run_dir or output_dir())
    result = run_htt(cfg.zoo_dir, ProtocolConfig(**container(cfg.protocol)),
                     ClassifierConfig(**container(cfg.classifier)), ChainOptions(**container(cfg.chains)),
                     cfg.eval_zoo_dir, cfg.seed, cfg.progress, measure_settings=container(cfg.measure),
                     tc=TrainerConfig(**container(cfg.trainer)))
    result["meta"]["config"] = container(cfg)
    result["meta"]["warnings"] = list(notes or [])  # every WeightsimWarning of the job, zoo stage included
    run_dir.mkdir(parents=True, exist_ok=True)
    plots = [plot_accuracy(result["rows"], run_dir / "accuracy.png", chance_levels(result["meta"]))]
    if result["cmc"]:
        plots.append(plot_cmc(result["cmc"], run_dir / "cmc.png"))
    paths = write_report(run_dir, result, plots={p: PLOTS[p.name] for p in plots})
    print("\n" + markdown_table(result["rows"]))
    print(f"\nreport: {paths['md']}  (json, csv, png beside it)")
    log_htt(logger, result, plots)  # wandb: summary scalars, rows and plots (docs/wandb.md); CSV needs nothing
    return result
