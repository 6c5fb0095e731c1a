"""weightsim-plan: task sizes without data, the sweep's jobs, the numbers of a job, and the command."""

from __future__ import annotations

import math

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import SHARED_DATA, run_cli
from weightsim.config import CONF
from weightsim.stages import register_configs
from weightsim.data.shapes import data_shape, shape_of
from weightsim.nets.mlp import MLP
from weightsim.plan import GPU_MEMORY, expand, job_overrides, plan_job


@pytest.fixture(scope="module")
def hydra_conf():
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def test_tiny_imagenet_and_cifar_sizes_without_data():
    tiny, known = data_shape({"_target_": "weightsim.data.tiny_imagenet.tiny_imagenet", "size": 64})
    assert known and tiny.input_shape == (3, 64, 64) and len(tiny.train) == 50
    assert tiny.pool == 200 * 550 and tiny.x_bytes == 200 * 550 * 3 * 64 * 64 * 4  # 5.0 GiB on the device
    assert set(tiny.train) == {2000} and set(tiny.test) == {200}
    small, _ = data_shape({"_target_": "weightsim.data.tiny_imagenet.tiny_imagenet", "size": 32, "train_tasks": 7,
                           "unseen_tasks": 3, "train_per_class": 250})
    assert small.pool == 40 * 300 and set(small.train) == {1000}
    cifar, _ = data_shape({"_target_": "weightsim.data.cifar100.cifar100", "train_tasks": 20, "unseen_tasks": 5,
                           "size": 16})
    assert cifar.pool == 50 * 600 and cifar.input_shape == (3, 16, 16) and set(cifar.test) == {200}


@pytest.mark.data
def test_namedata_sizes_are_the_loaders():
    from weightsim.data.namedata import namedata

    if not (SHARED_DATA / "names").is_dir():
        pytest.skip(f"NameData not in {SHARED_DATA}/names")
    cfg = {"train_tasks": 6, "unseen_tasks": 3, "test_fraction": 0.25}
    planned, known = data_shape({"_target_": "weightsim.data.namedata.namedata", **cfg})
    loaded = shape_of(namedata(str(SHARED_DATA / "names"), **cfg))
    assert known and (planned.pool, planned.train, planned.test) == (loaded.pool, loaded.train, loaded.test)
    assert planned.input_shape == loaded.input_shape and planned.info["vocab_size"] == loaded.info["vocab_size"]


def test_expand_is_the_basic_sweepers_product():
    assert expand(["arch=a,b", "zoo.seeds=3", "zoo.seed_offset=0,25"]) == [
        ["arch=a", "zoo.seeds=3", "zoo.seed_offset=0"], ["arch=a", "zoo.seeds=3", "zoo.seed_offset=25"],
        ["arch=b", "zoo.seeds=3", "zoo.seed_offset=0"], ["arch=b", "zoo.seeds=3", "zoo.seed_offset=25"]]


def test_a_sweeps_jobs_come_from_the_experiment(hydra_conf):
    jobs = job_overrides(["-m", "experiment=fig2_tiny_imagenet", "scale=paper"])
    pairs = [(j[0], j[1]) for j in jobs]
    assert pairs == [(f"arch={a}", f"zoo.seed_offset={s}") for a in ("mlp4", "plainnet5") for s in (0, 25, 50, 75)]
    assert all(j[2:] == ["experiment=fig2_tiny_imagenet", "scale=paper"] for j in jobs)
    # the command line's own list wins over the experiment's
    mine = job_overrides(["-m", "experiment=fig2_tiny_imagenet", "scale=paper", "arch=mlp4"])
    assert len(mine) == 4 and all("arch=mlp4" in j for j in mine)
    assert job_overrides(["experiment=demo"]) == [["experiment=demo"]]  # no -m: one job


def test_fig2_mlp4_numbers_at_paper_scale(hydra_conf):
    cfg = compose("config", overrides=["experiment=fig2_tiny_imagenet", "scale=paper", "arch=mlp4",
                                       "zoo.seed_offset=0"], return_hydra_config=True)
    j = plan_job(cfg, {})
    assert j.nets == 50 * 25 and j.steps == math.ceil(30 * 2000 / 32)
    net = MLP(input_shape=(3, 64, 64), num_classes=4, hidden=500, depth=4)
    assert j.disk == j.nets * sum(p.numel() for p in net.parameters()) * 4  # float32: zoo.dtype not set
    assert j.data == 200 * 550 * 3 * 64 * 64 * 4
    assert j.peak <= j.budget and j.peak <= GPU_MEMORY  # sized to the 40 GB budget: one 80 GB GPU holds it
    assert j.memory.train_member > 3 * sum(p.numel() for p in net.parameters()) * 4  # params, grads, momentum
    w = sum(p.numel() for n, p in net.named_parameters() if n.endswith("weight"))
    # a step: forward 2BW, weight gradients 2BW, input gradients 2BW except the first layer's; plus
    # evaluation's forward passes (2W per sample, 2200 samples per net)
    low, high = j.nets * j.steps * 4 * 32 * w, j.nets * (j.steps * 6 * 32 * w + 2200 * 2 * w)
    assert low < j.train_flops <= high


@pytest.mark.slow  # 20-110 s: the subprocess measures MLP-4's population and featurization (load-dependent)
def test_weightsim_plan_runs_without_data(tmp_path):
    r = run_cli("plan", "-m", "experiment=fig2_tiny_imagenet", "scale=cpu", "arch=mlp4",
                env={"WEIGHTSIM_DATA": str(tmp_path)}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| job | zoo | nets | SGD steps/net |" in r.stdout
    # 7 + 3 tasks x 16 seeds; 10 epochs of 1000 images in batches of 64
    assert "| #0 | tiny_imagenet-mlp4-cpu | 160 | 157 |" in r.stdout
    assert "one 80 GB GPU" in r.stdout and "a 64 GB disk: fits" in r.stdout
    bad = run_cli("plan", "arch=nope")
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown arch 'nope'")
