"""The zoo view (weightsim.zoo.Zoo): nets, stacked weights, tasks and a many-net forward with
captured activations, each checked against the nets loaded and run one at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from tests.conftest import run_cli
from weightsim.data.common import LOCATION_KEYS
from weightsim.data.digits import digits
from weightsim.errors import ConfigError, DataError, ZooError
from weightsim.nets.build import build_net
from weightsim.zoo import Zoo, ZooConfig, generate_zoo, hidden_layers
from weightsim.zoo.generate import builder
from weightsim.zoo.store import ZooReader

ZC = ZooConfig(seeds=2, epochs=0.5, batch_size=16, population_size=3, accelerator="cpu")


def make_zoo(root: Path, dataset: dict, arch: dict, zc: ZooConfig = ZC) -> Path:
    """A zoo as `weightsim-zoo` writes it (header with the dataset and arch configs, fingerprint)."""
    taskset = instantiate(dataset)
    arch = {**arch, **{k: v for k, v in taskset.info.items() if arch.get(k, 0) is None}}
    identity = {"dataset": {"name": dataset["_target_"].rsplit(".", 1)[1], "fingerprint": taskset.fingerprint(),
                            "config": {k: v for k, v in dataset.items() if k not in LOCATION_KEYS}},
                "arch": {"name": arch["_target_"].rsplit(".", 1)[1], "config": arch},
                "input_shape": list(taskset.input_shape), "num_classes": taskset.classes_per_task,
                "data_info": taskset.info, "tasks": [t.meta() for t in taskset.tasks], "config_hash": "test"}
    return generate_zoo(builder(instantiate(arch), taskset.input_shape, taskset.classes_per_task), taskset, zc,
                        root, identity, progress=False)


DIGITS = {"_target_": "weightsim.data.digits.digits", "train_tasks": 2, "unseen_tasks": 1}
MLP = {"_target_": "weightsim.nets.mlp.MLP", "_partial_": True, "hidden": 8, "depth": 3}
PLAIN_BN = {"_target_": "weightsim.nets.conv.PlainNet", "_partial_": True, "units": 3, "channels": 4, "norm": "bn"}
GRU = {"_target_": "weightsim.nets.gru.GRUNet", "_partial_": True, "hidden": 5, "layers": 2, "vocab_size": None}


def codes_npz(path: Path, n: int = 120, t: int = 7, vocab: int = 6, seed: int = 0) -> Path:
    """Character-code sequences (N, T), 0-padded at the end, 4 classes that differ in their codes."""
    g = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = (g.integers(1, vocab, (n, t)) + y[:, None]) % vocab + 1
    x[np.arange(t)[None] >= g.integers(3, t + 1, n)[:, None]] = 0
    np.savez(path, x=x.astype(np.int64), y=y)
    return path


@pytest.fixture(scope="module")
def zoos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("view")
    npz = codes_npz(d / "codes.npz")
    gru_data = {"_target_": "weightsim.data.arrays.arrays", "data_dir": str(npz), "tokens": True,
                "train_tasks": 2, "unseen_tasks": 0}
    return {"mlp": make_zoo(d / "mlp", DIGITS, MLP),
            "plain_bn": make_zoo(d / "plain", {**DIGITS, "image": True}, PLAIN_BN),
            "gru": make_zoo(d / "gru", gru_data, GRU), "npz": npz}


@pytest.fixture(scope="module")
def cli_zoo(tmp_path_factory) -> Path:
    """A digits MLP zoo written by the real `weightsim-zoo` command."""
    d = tmp_path_factory.mktemp("cli")
    out = run_cli("zoo", "dataset.train_tasks=2", "dataset.unseen_tasks=1", "arch.hidden=8", "zoo.seeds=2",
                  "zoo.epochs=2", "zoo.accelerator=cpu", "logger=none", "progress=false",
                  f"zoo_dir={d / 'zoo'}", f"hydra.run.dir={d / 'run'}")
    assert out.returncode == 0, out.stderr[-2000:]
    return d / "zoo"


def one_at_a_time(zoo: Zoo, rows: list[dict], x: Tensor, capture: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """The reference: each net built alone (build_net + its own safetensors slice), run on x, its
    layers' outputs taken by forward hooks."""
    h = ZooReader(zoo.root).head
    logits, acts = [], {n: [] for n in capture}
    for row in rows:
        net = build_net(h["arch"]["config"], h["input_shape"], h["num_classes"])
        state = net.state_dict()  # with the version metadata BatchNorm reads when loading
        state.update({k: v[0] for k, v in ZooReader(zoo.root).load([row]).items()})
        net.load_state_dict(state)
        net.eval()
        seen = {}
        hooks = [net.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: seen.__setitem__(n, o[0] if isinstance(o, tuple) else o)) for n in capture]
        with torch.no_grad():
            logits.append(net(x))
        for hk in hooks:
            hk.remove()
        for n in capture:
            acts[n].append(seen[n])
    return torch.stack(logits), {n: torch.stack(v) for n, v in acts.items()}


def test_nets_of_the_view_are_the_nets_on_disk(cli_zoo):
    """zoo.nets(rows) and zoo.net(row) equal each net loaded alone, and score on the rebuilt tasks
    what the population scored when it trained them (the manifest's test_acc)."""
    zoo = Zoo(cli_zoo)
    rows = zoo.rows
    assert len(rows) == 6 and isinstance(zoo.template, nn.Module) and not zoo.template.training
    taskset = zoo.taskset()
    x = taskset.x[:50]
    ref, _ = one_at_a_time(zoo, rows, x, [])
    batch = zoo.nets(rows)
    for i, row in enumerate(rows):
        assert not batch[i].training
        torch.testing.assert_close(batch[i](x), ref[i], rtol=0, atol=0)
        torch.testing.assert_close(zoo.net(row)(x), ref[i], rtol=0, atol=0)
        task = taskset.tasks[row["task"]]
        with torch.no_grad():
            acc = float((batch[i](taskset.x[task.test_idx]).argmax(-1) == task.test_y).float().mean())
        assert acc == pytest.approx(row["test_acc"], abs=1.01 / len(task.test_idx))  # one flip at most
    assert not torch.allclose(ref[0], ref[1])  # not vacuous: two seeds, two functions
    stacked = zoo.stacked(rows[2:4])
    assert all(v.shape[0] == 2 for v in stacked.values())
    torch.testing.assert_close(stacked["1.weight"][1], dict(zoo.net(rows[3]).named_parameters())["1.weight"])


def test_select_by_task_role_and_divergence(cli_zoo):
    zoo = Zoo(cli_zoo)
    assert [(r["task"], r["seed"]) for r in zoo.select(task=1)] == [(1, 0), (1, 1)]
    assert {r["task"] for r in zoo.select(role="unseen")} == {2}
    assert {r["task"] for r in zoo.select(task=[0, 2], role="train")} == {0}
    usable = zoo.select(diverged=False)
    assert usable == [r for r in zoo.rows if not r["diverged"]]
    assert zoo.select(diverged=True) == [r for r in zoo.rows if r["diverged"]]


@pytest.mark.parametrize("arch,vectorize", [("mlp", "auto"), ("mlp", "vmap"), ("plain_bn", "auto"),
                                            ("plain_bn", "vmap"), ("plain_bn", "loop"), ("gru", "auto")])
def test_forward_of_many_nets_equals_a_loop_over_single_nets(zoos, arch, vectorize):
    """Logits and every hidden layer's activations (plus a BN output) equal the nets run one by one:
    BN in eval mode with each net's own running statistics, the GRU's output sequence."""
    zoo = Zoo(zoos[arch])
    rows = zoo.select(diverged=None)
    x = zoo.taskset(data_dir=zoos["npz"] if arch == "gru" else None).x[:24]
    layers = hidden_layers(zoo.template)
    capture = layers + (["0.body.2"] if arch == "plain_bn" else [])
    logits, acts = zoo.forward(rows, x, capture, vectorize=vectorize)
    ref_logits, ref_acts = one_at_a_time(zoo, rows, x, capture)
    assert logits.shape == (len(rows), 24, 2)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    assert set(acts) == set(capture)
    for n in capture:
        assert acts[n].shape == ref_acts[n].shape, n
        torch.testing.assert_close(acts[n], ref_acts[n], rtol=1e-4, atol=1e-5, msg=lambda m: f"{n}: {m}")
        assert not torch.allclose(acts[n][0], acts[n][1])  # each net's own weights, not one net's
    if arch == "plain_bn":  # BN used its running statistics: batch statistics would give other outputs
        bn = zoo.net(rows[0]).get_submodule("0.body.2")
        assert bn.running_mean.abs().sum() > 0 and not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert acts["0.body.2"].shape == (len(rows), 24, 4, 8, 8)


def test_hidden_layers_name_every_activation():
    mlp = build_net(MLP, (64,), 2)
    assert hidden_layers(mlp) == ["2", "4"]
    plain = build_net(PLAIN_BN, (1, 8, 8), 2)
    assert [n for n in hidden_layers(plain)] == [n for n, m in plain.named_modules() if isinstance(m, nn.ReLU)]
    assert hidden_layers(plain)[0] == "0.body.1" and len(hidden_layers(plain)) == 3
    assert hidden_layers(build_net({**GRU, "vocab_size": 6}, (7,), 2)) == ["rnn"]


def test_unknown_layer_is_one_error_naming_the_hidden_layers(zoos):
    zoo = Zoo(zoos["mlp"])
    with pytest.raises(ConfigError, match=r"no layer 'relu1' in the net of zoo .*its hidden layers: 2, 4"):
        zoo.forward(zoo.rows[:2], torch.zeros(3, 64), ["relu1"])


def test_taskset_round_trips_for_digits(cli_zoo):
    zoo = Zoo(cli_zoo)
    rebuilt, direct = zoo.taskset(), digits(train_tasks=2, unseen_tasks=1)
    assert rebuilt.fingerprint() == zoo.head["dataset"]["fingerprint"] == direct.fingerprint()
    torch.testing.assert_close(rebuilt.x, direct.x)
    for a, b in zip(rebuilt.tasks, direct.tasks, strict=True):
        assert (a.classes, a.role) == (b.classes, b.role)
        assert torch.equal(a.train_idx, b.train_idx) and torch.equal(a.test_idx, b.test_idx)
    assert [t.id for t in rebuilt.tasks] == sorted({r["task"] for r in zoo.rows})


def test_missing_data_names_the_dataset_and_data_dir(tmp_path, monkeypatch):
    """A zoo trained on CIFAR-100 whose data is not where it is looked for: one DataError."""
    monkeypatch.setenv("WEIGHTSIM_DATA", str(tmp_path / "empty"))  # the default location holds nothing
    root = tmp_path / "zoo"
    (root / "weights").mkdir(parents=True)
    head = {"format": "weightsim-zoo", "version": 1, "arch": {"name": "mlp", "config": MLP},
            "dataset": {"name": "cifar100", "fingerprint": "0123456789abcdef",
                        "config": {"_target_": "weightsim.data.cifar100.cifar100", "train_tasks": 2,
                                   "unseen_tasks": 1}}, "input_shape": [3, 32, 32], "num_classes": 2}
    (root / "zoo.json").write_text(json.dumps(head))
    with pytest.raises(DataError, match=rf"trained on dataset 'cifar100', which does not load "
                                        rf"from data_dir={tmp_path / 'nope'}: cifar100: no folder .*"
                                        rf"pass Zoo.taskset\(data_dir="):
        Zoo(root).taskset(data_dir=tmp_path / "nope")
    with pytest.raises(DataError, match=r"'cifar100', which does not load without a data_dir \(the loader's "
                                        r"default: \$WEIGHTSIM_DATA/<folder>, else ./data/<folder>\): cifar100: "):
        Zoo(root).taskset()


def test_other_data_than_the_zoo_was_trained_on_is_refused(zoos, tmp_path):
    other = codes_npz(tmp_path / "other.npz", n=100)  # the same kind of file, fewer samples
    with pytest.raises(ZooError, match=r"dataset 'arrays' at .*other.npz gives other tasks \(fingerprint "
                                       r"[0-9a-f]{16}\) than the zoo was trained on \([0-9a-f]{16}\)"):
        Zoo(zoos["gru"]).taskset(data_dir=other)
    assert Zoo(zoos["gru"]).taskset(data_dir=zoos["npz"]).fingerprint() == \
        Zoo(zoos["gru"]).head["dataset"]["fingerprint"]  # not vacuous: its own file passes


def test_data_dir_for_a_built_in_dataset_is_refused(zoos):
    with pytest.raises(ConfigError, match="dataset 'digits' of zoo .* takes no data_dir"):
        Zoo(zoos["mlp"]).taskset(data_dir="/tmp")
