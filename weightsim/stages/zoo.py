"""The zoo stages: weightsim-zoo (train the missing nets of a zoo) and weightsim-zoo import (nets
trained elsewhere as a zoo). A zoo's identity names its dataset and arch by the job's choices."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from weightsim.stages.job import choices, container


def fill_from_data(arch_cfg: DictConfig, info: dict) -> None:
    """Arch options left null that the dataset knows (e.g. ``vocab_size`` of a sequence dataset) are
    taken from ``TaskSet.info``, so the zoo header stores the concrete value."""
    for key, value in info.items():
        if key in arch_cfg and arch_cfg[key] is None:
            arch_cfg[key] = value


def zoo_stage(cfg: DictConfig, logger=None) -> Path:
    """Train the nets of ``cfg.zoo_dir`` that are missing (resumable); returns the zoo's path."""
    taskset = instantiate(cfg.dataset)  # bad data fails here, before Lightning is imported below
    from weightsim.data.common import LOCATION_KEYS
    from weightsim.report.wandb_log import log_zoo
    from weightsim.trainer import TrainerConfig
    from weightsim.zoo.generate import ZooConfig, builder, generate_zoo
    from weightsim.zoo.view import Zoo

    fill_from_data(cfg.arch, taskset.info)
    arch = instantiate(cfg.arch)
    choice = choices()
    # where the data lies (data_dir, download) is not what the zoo is: left out of its identity
    dataset_cfg = {k: v for k, v in container(cfg.dataset).items() if k not in LOCATION_KEYS}
    arch_cfg = container(cfg.arch)
    zc = ZooConfig(**container(cfg.zoo))
    identity = {"dataset": {"name": choice.get("dataset"), "config": dataset_cfg,
                            "fingerprint": taskset.fingerprint()},
                "arch": {"name": choice.get("arch"), "config": arch_cfg},
                "input_shape": list(taskset.input_shape), "num_classes": taskset.classes_per_task,
                "data_info": taskset.info, "tasks": [t.meta() for t in taskset.tasks]}
    identity["config_hash"] = hashlib.sha256(json.dumps(
        [dataset_cfg, arch_cfg, zc.training()], sort_keys=True).encode()).hexdigest()[:16]
    t0 = time.perf_counter()
    path = generate_zoo(builder(arch, taskset.input_shape, taskset.classes_per_task), taskset, zc,
                        cfg.zoo_dir, identity, logger, cfg.progress, TrainerConfig(**container(cfg.trainer)))
    rows = Zoo(path).rows
    print(f"zoo {path}: {len(rows)} nets, mean test accuracy {sum(r['test_acc'] for r in rows) / len(rows):.3f}, "
          f"{sum(r['diverged'] for r in rows)} diverged ({time.perf_counter() - t0:.0f} s)", flush=True)
    log_zoo(logger, path, range(zc.seed_offset, zc.seed_offset + zc.seeds))
    return path


def import_stage(cfg: DictConfig) -> Path:
    """weightsim-zoo import: the checkpoints of ``cfg.folder`` listed in ``cfg.index`` as a zoo at
    ``cfg.zoo_dir`` (weightsim/zoo/importer.py); returns its path."""
    from weightsim.zoo.importer import import_nets

    arch = {**container(cfg.arch), "name": choices().get("arch")}
    return import_nets(cfg.folder, cfg.index, cfg.zoo_dir, arch, input_shape=cfg.input_shape,
                       num_classes=cfg.num_classes)
