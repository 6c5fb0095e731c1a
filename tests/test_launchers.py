"""Launchers: joblib jobs pinned to distinct GPUs (the selection, tested on the CPU), and the
distributed path (submitit, as launcher=slurm runs it) making the same zoo as the basic launcher."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict
from safetensors.torch import load_file

from tests.conftest import TINY, run_cli
from weightsim import sweep
from weightsim.config import CONF
from weightsim.stages import register_configs
from weightsim.sweep import claim_gpu, gpu_order, visible_devices

register_configs()


@pytest.fixture(autouse=True)
def restore_hydra_config():
    """The tests below set Hydra's global job config to look like a multirun job: put it back."""
    before = HydraConfig.instance().cfg
    yield
    HydraConfig.instance().cfg = before


def test_each_job_tries_its_own_gpu_first_then_the_next_ones():
    assert gpu_order(0, 4) == [0, 1, 2, 3] and gpu_order(5, 4) == [1, 2, 3, 0] and gpu_order(3, 1) == [0]
    assert gpu_order(7, 0) == []
    # n jobs at once on n GPUs, numbered 0..n-1: all distinct
    assert sorted(gpu_order(j, 3)[0] for j in range(3)) == [0, 1, 2]


def test_the_chosen_gpu_is_named_within_what_is_already_visible():
    assert visible_devices(1, None) == "1" and visible_devices(1, "") == "1"
    assert visible_devices(1, "2,3") == "3" and visible_devices(0, "GPU-abc, GPU-def") == "GPU-abc"


def test_concurrent_claims_get_distinct_gpus_and_share_only_when_all_are_held(tmp_path):
    a, lock_a = claim_gpu(tmp_path, 0, 2)
    b, lock_b = claim_gpu(tmp_path, 2, 2)  # job 2 would take GPU 0, which job 0 holds
    assert (a, b) == (0, 1) and lock_a is not None and lock_b is not None
    c, lock_c = claim_gpu(tmp_path, 3, 2)  # more jobs at once than GPUs: its own GPU, shared
    assert (c, lock_c) == (1, None)
    lock_a.close()  # a worker process that ends frees its GPU
    assert claim_gpu(tmp_path, 1, 2)[0] == 0
    lock_b.close()


def joblib_job(tmp_path: Path, num: int):
    """Make this process look like job ``num`` of a launcher=joblib multirun (what Hydra sets in a worker)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["launcher=joblib", f"hydra.sweep.dir={tmp_path}"],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode, cfg.hydra.job.num = RunMode.MULTIRUN, num
    HydraConfig.instance().set_config(cfg)


@pytest.mark.parametrize("gpus,expected", [(0, None), (1, None), (4, "1")])
def test_a_joblib_job_is_pinned_only_with_several_gpus(tmp_path, monkeypatch, gpus, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(sweep, "_pinned", [])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    joblib_job(tmp_path, 5)
    assert sweep.pin_joblib_gpu() == expected
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == expected
    if expected:  # the worker keeps its GPU for its later jobs
        joblib_job(tmp_path, 6)
        assert sweep.pin_joblib_gpu() == expected and os.environ["CUDA_VISIBLE_DEVICES"] == expected
        sweep._pinned[0].close()


def test_other_launchers_are_not_pinned(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(sweep, "_pinned", [])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["launcher=submitit_local", f"hydra.sweep.dir={tmp_path}"],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    assert sweep.pin_joblib_gpu() is None and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_slurm_keeps_its_config():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.timeout_min, launcher.gpus_per_node, launcher.cpus_per_task, launcher.mem_gb,
            launcher.array_parallelism) == (720, 1, 8, 64, 64)
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j" and launcher.partition is None


def zoo_contents(zoo: Path) -> tuple[dict, dict, dict]:
    """(zoo.json, {piece: manifest rows without wall times}, {piece: {tensor name: tensor}})."""
    head = json.loads((zoo / "zoo.json").read_text())
    rows = {p.stem: [{k: v for k, v in r.items() if "wall" not in k and "time" not in k}
                     for r in json.loads(p.read_text())] for p in sorted((zoo / "weights").glob("*.json"))}
    weights = {p.stem: load_file(p) for p in sorted((zoo / "weights").glob("*.safetensors"))}
    return head, rows, weights


def test_a_submitit_sweep_makes_the_zoo_the_basic_launcher_makes(tmp_path):
    """Two seed blocks of one zoo, each a submitit job in its own process (the launcher=slurm path,
    locally), then HTT on the complete zoo: the zoo equals the one-process sweep's bit for bit
    (same seeds, same device, same code)."""
    def run(launcher: str):
        out = run_cli("run", "-m", f"launcher={launcher}", "zoo.seed_offset=0,3", "sweep.htt=true",
                      f"zoo_dir={tmp_path}/{launcher}/zoo", f"hydra.sweep.dir={tmp_path}/{launcher}/run",
                      *TINY, "zoo.seeds=3", "zoo.threads=1", "protocol.protocols=[classification]",
                      "protocol.repeats=1")
        assert out.returncode == 0, out.stderr[-3000:]
        status = json.loads((tmp_path / launcher / "run" / "sweep.json").read_text())
        assert [j["status"] for j in status["jobs"]] == ["ok", "ok"]
        assert [(r["label"], r["status"]) for r in status["htt"]] == [("zoo", "ok")]
        report = json.loads((tmp_path / launcher / "run" / "htt" / "zoo" / "report.json").read_text())
        return zoo_contents(tmp_path / launcher / "zoo"), report

    (head, rows, weights), report = run("submitit_local")
    assert list((tmp_path / "submitit_local" / "run" / ".submitit").iterdir())  # the jobs went through submitit
    (head0, rows0, weights0), report0 = run("local")
    assert head == head0 and rows == rows0
    assert sorted({r["seed"] for rs in rows.values() for r in rs}) == list(range(6))  # both blocks
    assert weights.keys() == weights0.keys()
    for piece, tensors in weights.items():
        assert tensors.keys() == weights0[piece].keys()
        for name, t in tensors.items():
            assert t.dtype == weights0[piece][name].dtype and t.equal(weights0[piece][name]), (piece, name)
    assert report == report0  # and so the same HTT results (computed in the sweeping process both times)
