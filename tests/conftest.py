"""Shared test helpers. Tests never touch the network; wandb is disabled except in tests/test_wandb.py (offline)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from omegaconf import DictConfig, open_dict

os.environ["WANDB_MODE"] = "disabled"
# decoded-dataset caches of the tests go to a temporary folder, never to the user's ~/.cache,
# removed when the test session ends
if "WEIGHTSIM_CACHE" not in os.environ:
    os.environ["WEIGHTSIM_CACHE"] = tempfile.mkdtemp(prefix="weightsim-test-cache-")
    atexit.register(shutil.rmtree, os.environ["WEIGHTSIM_CACHE"], True)
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: files run in parallel processes, one core each
    import torch

    torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WEIGHTSIM_SHARED_DATA", ROOT.parent / "shared" / "data"))


def run_cli(app: str, *overrides: str, cwd: Path | None = None, timeout: int = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a real Hydra app (`weightsim-<app>`) in a subprocess with this interpreter and code;
    ``env`` adds to or replaces its environment (e.g. WANDB_MODE=offline: wandb is disabled otherwise)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", **(env or {})}
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one core per test process, as in the worker itself
        env.setdefault("OMP_NUM_THREADS", "1")
    code = f"from weightsim.cli import {app}_main; {app}_main()"
    return subprocess.run([sys.executable, "-c", code, *overrides], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def composed(*overrides: str, config_name: str = "config") -> Iterator[DictConfig]:
    """The config a ``weightsim-*`` command composes for ``overrides``, with Hydra's job state set
    as in that command (a stage reads its config-group choices from it), for running a stage in this
    process: for tests whose subject is a stage's result, not what the command prints or exits with
    (those run the command: ``run_cli``), so they spare a subprocess that imports torch and Lightning."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from weightsim.paths import CONF
    from weightsim.stages import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # the job's config has no hydra node, as in Hydra's run_job
        del cfg["hydra"]
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = None


def train_zoo(zoo_dir: Path, *overrides: str) -> Path:
    """The zoo ``weightsim-zoo *overrides zoo_dir=...`` trains, trained in this process (``composed``),
    with torch's default dtype of a fresh process (float32: a test module may have set float64)."""
    import torch

    from weightsim.stages.zoo import zoo_stage

    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with composed(*overrides, f"zoo_dir={zoo_dir}") as cfg:
            return zoo_stage(cfg)
    finally:
        torch.set_default_dtype(dtype)


# the smallest run that still has every moving part: 3 training + 2 unseen tasks, 5 seeds
TINY = ("dataset.train_tasks=3", "dataset.unseen_tasks=2", "zoo.seeds=5", "zoo.epochs=3",
        "arch.hidden=8", "protocol.queries=2", "protocol.train_seeds=3", "classifier.max_iter=100",
        "protocol.n_permutations=3", "progress=false", "logger=none")


@pytest.fixture
def tiny_overrides():
    return TINY
