"""Shared test helpers. Tests never touch the network; wandb is disabled except in tests/test_wandb.py (offline)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

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


# the smallest run that still has every moving part: 3 training + 2 unseen tasks, 5 seeds
TINY = ("dataset.train_tasks=3", "dataset.unseen_tasks=2", "zoo.seeds=5", "zoo.epochs=3",
        "arch.hidden=8", "protocol.queries=2", "protocol.train_seeds=3", "classifier.max_iter=100",
        "protocol.n_permutations=3", "progress=false", "logger=none")


@pytest.fixture
def tiny_overrides():
    return TINY
