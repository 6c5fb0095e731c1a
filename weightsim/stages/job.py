"""What a stage needs from the Hydra job it runs in: its run directory, its config-group choices,
its wandb identity and its Lightning logger. The one place below the CLI that reads Hydra's run
state (``HydraConfig``); the library gets plain values and dataclasses from here."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def container(cfg) -> dict:
    """A config node as plain Python values, interpolations resolved."""
    return OmegaConf.to_container(cfg, resolve=True)


def output_dir() -> Path:
    """The job's run directory (hydra.run.dir, or its sweep subdir)."""
    return Path(HydraConfig.get().runtime.output_dir)


def choices() -> dict:
    """The job's config-group choices, e.g. {"dataset": "digits", "arch": "mlp", ...}."""
    return dict(HydraConfig.get().runtime.choices)


def make_logger(cfg: DictConfig, stage: str = "run"):
    """The job's Lightning logger; a wandb run gets its name, group, tags and config from the job
    (``stage``: zoo, htt or run; weightsim/report/wandb_log.py)."""
    from weightsim.report.wandb_log import is_wandb, logger_args

    if not (cfg.get("logger") and "_target_" in cfg.logger):
        return None
    hc = HydraConfig.get()
    job_num = hc.job.num if hc.mode == RunMode.MULTIRUN else None
    args = logger_args(cfg, stage, dict(hc.runtime.choices), list(hc.overrides.task), job_num)
    logger = instantiate(cfg.logger, _partial_=True)(**args)  # "config" is instantiate's own
    if not is_wandb(logger):  # wandb has the composed config from its init; the others get it here
        logger.log_hyperparams(container(cfg))
    return logger


def finish(logger) -> None:
    """Write what the logger holds (the CSV logger keeps its rows until saved) and, one wandb run per
    job, finish it so multirun jobs never share a run."""
    if logger is not None:
        logger.save()
    if logger is not None and type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()
