"""Every setting an app reads, checked before any work (before the logger starts or a net trains):
one ConfigError line naming the setting and the fix."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from weightsim.errors import ConfigError
from weightsim.stages.job import container


def check_config(cfg: DictConfig, app: str) -> None:
    """One pass over the composed config of app ``app`` (zoo, htt, run, compare) before any work:
    every setting of the groups the app reads is in range, (weightsim-run on a new zoo) the zoo's
    seeds are enough for the protocol's split, and (htt, compare) the zoos they read exist. Raises
    ConfigError or ZooError with one line."""
    if app in ("zoo", "run", "htt", "compare"):
        from weightsim.zoo.store import check_zoo_dir

        for key in ("zoo_dir", "eval_zoo_dir"):
            if cfg.get(key):
                check_zoo_dir(str(cfg[key]), key)
    if app in ("zoo", "run"):
        from weightsim.zoo.options import ZooConfig

        ZooConfig(**container(cfg.zoo))  # validates itself
    if app in ("htt", "run", "compare"):
        from weightsim.chains.options import ChainOptions
        from weightsim.htt.settings import ProtocolConfig, check_protocol

        pc = ProtocolConfig(**container(cfg.protocol))
        if app != "compare":  # compare tests compare.measures, not protocol.measures
            check_protocol(pc)
        ChainOptions(**container(cfg.chains))  # validates itself
        if cfg.classifier.max_iter < 1 or cfg.classifier.l2 < 0:
            raise ConfigError(f"classifier.max_iter={cfg.classifier.max_iter} must be >= 1 and "
                              f"classifier.l2={cfg.classifier.l2} >= 0")
        if pc.train_seeds is not None and pc.train_seeds < 1:
            raise ConfigError(f"protocol.train_seeds={pc.train_seeds} must be >= 1 (or null: protocol.train_fraction)")
        if pc.queries < 1:
            raise ConfigError(f"protocol.queries={pc.queries} must be >= 1")
        from weightsim.measures.registry import settings_groups

        for (group, _), settings in settings_groups().items():  # each measure's settings validate themselves
            settings(**container(cfg.measure[group.split("/")[1]]))
    if app == "compare":
        from weightsim.compare.run import CompareConfig, check_compare

        check_compare(CompareConfig(**container(cfg.compare)))
    if app == "run" and not (cfg.get("sweep") or {}).get("htt"):
        check_seeds(cfg)
    if app in ("htt", "compare"):  # the zoos they read, in the order the stage reads them
        from weightsim.htt.settings import htt_device
        from weightsim.zoo.store import check_is_zoo

        if app == "htt":
            htt_device(cfg.protocol.device)  # (run_htt's first check after the settings)
        for key in ("zoo_dir", "eval_zoo_dir"):
            if cfg.get(key):
                check_is_zoo(str(cfg[key]))


def check_seeds(cfg: DictConfig) -> None:
    """weightsim-run trains ``zoo.seeds`` nets per task, then HTT splits them: enough seeds for one
    test seed per task after the training seeds, and a gallery after the retrieval queries. Checked
    only when zoo_dir holds no zoo yet (a zoo on disk may hold more seeds; HTT checks it then)."""
    if (Path(str(cfg.zoo_dir)) / "zoo.json").exists():
        return
    n, pc = cfg.zoo.seeds, cfg.protocol
    n_train = pc.train_seeds if pc.train_seeds is not None else max(1, int(round(pc.train_fraction * n)))
    knob = "protocol.train_seeds" if pc.train_seeds is not None else f"protocol.train_fraction={pc.train_fraction}"
    if n_train >= n:
        raise ConfigError(f"zoo.seeds={n} leaves no test seed after {n_train} training seeds per task "
                          f"({knob}): raise zoo.seeds above {n_train} or lower {knob.split('=')[0]}")
    if "retrieval" in pc.protocols and cfg.dataset.get("unseen_tasks") and pc.queries >= n:
        raise ConfigError(f"zoo.seeds={n} leaves no gallery seed after {pc.queries} queries per task of retrieval "
                          f"(protocol.queries={pc.queries}): raise zoo.seeds above {pc.queries} or lower protocol.queries")
