"""Nets trained elsewhere: plain torch MLPs trained here, saved as .pt state dicts with an index CSV,
imported as a zoo (weightsim-zoo import), tested in one call (weightsim.htt.test) and by weightsim-htt
with the same rows, and compared by weight matching without any data."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import weightsim.htt as htt
from tests.conftest import run_cli
from weightsim.chains import chain_features
from weightsim.errors import ChainError, ConfigError, ZooError
from weightsim.zoo import Zoo
from weightsim.zoo import import_nets
from weightsim.zoo.verify import verify_zoo

PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]  # a task: tell these two digits apart
SEEDS = {0: 5, 1: 5, 2: 5, 3: 4, 4: 4}  # training tasks 0-2 (3 train + 2 test seeds), unseen tasks 3-4
UNSEEN = (3, 4)
SMALL = {"queries": 2, "n_permutations": 9, "retrieval_permutations": 99, "repeats": 2}


def plain_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


def train(task: int, seed: int, x: torch.Tensor, y: torch.Tensor) -> nn.Sequential:
    """A few SGD steps of a plain torch MLP on digits pair ``task``."""
    a, b = PAIRS[task]
    keep = (y == a) | (y == b)
    xt, yt = x[keep], (y[keep] == b).long()
    g = torch.Generator().manual_seed(1000 * task + seed)
    torch.manual_seed(1000 * task + seed)
    net = plain_mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(30):
        i = torch.randint(0, len(xt), (32,), generator=g)
        loss = nn.functional.cross_entropy(net(xt[i]), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint folder, nets, task labels): the nets saved as .pt state dicts with index.csv."""
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y)
    folder = tmp_path_factory.mktemp("ckpts")
    nets, tasks, rows = [], [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is fastest
    try:
        for task, n in SEEDS.items():
            for seed in range(n):
                net = train(task, seed, x, y)
                torch.save(net.state_dict(), folder / f"t{task}_s{seed}.pt")
                nets.append(net)
                tasks.append(task)
                rows.append({"file": f"t{task}_s{seed}.pt", "task": task, "seed": seed,
                             "role": "unseen" if task in UNSEEN else "train"})
    finally:
        torch.set_num_threads(threads)
    with open(folder / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["file", "task", "seed", "role"])
        w.writeheader()
        w.writerows(rows)
    return folder, nets, tasks


@pytest.fixture(scope="module")
def imported(trained, tmp_path_factory):
    """The zoo weightsim-zoo import wrote from the checkpoints, as the built-in MLP (Flatten first)."""
    folder, _, _ = trained
    zoo = tmp_path_factory.mktemp("zoo") / "mine"
    r = run_cli("zoo", "import", f"folder={folder}", "arch=mlp", "arch.hidden=16", "arch.depth=3",
                f"zoo_dir={zoo}", f"hydra.run.dir={zoo.parent / 'run'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "0 -> 1, 2 -> 3, 4 -> 5" in r.stdout  # the plain Sequential's modules, shifted by the MLP's Flatten
    return zoo


def test_imported_zoo_is_an_ordinary_zoo(trained, imported):
    _, nets, _ = trained
    assert verify_zoo(imported).ok
    zoo = Zoo(imported)
    assert not zoo.has_data and len(zoo.rows) == sum(SEEDS.values())
    assert {r["task"] for r in zoo.select(role="unseen")} == set(UNSEEN)
    row = zoo.select(task=1)[2]  # task 1, seed 2: nets are in (task, seed) order
    x = torch.randn(7, 64)
    with torch.no_grad():
        assert torch.allclose(zoo.net(row)(x), nets[SEEDS[0] + 2](x), atol=1e-6)


def test_one_call_and_weightsim_htt_give_the_same_rows(trained, imported, tmp_path, capfd):
    _, nets, tasks = trained
    result = htt.test(nets, tasks, unseen=UNSEEN, protocol=SMALL)
    said = capfd.readouterr()
    assert "GPU available" not in said.out + said.err and "Trainer.fit" not in said.out + said.err
    rows = result["rows"]
    assert {r["protocol"] for r in rows} == {"classification", "retrieval"}
    assert {r["measure"] for r in rows} == {"chain_gram", "raw"}
    assert all(r["effect_size"] is not None and r["p_value"] is not None for r in rows)
    r = run_cli("htt", f"zoo_dir={imported}", *(f"protocol.{k}={v}" for k, v in SMALL.items()),
                "progress=false", "logger=none", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    cli = json.loads((tmp_path / "report.json").read_text())  # the rows, as report.csv
    assert result["meta"]["warnings"] == json.loads((tmp_path / "run.json").read_text())["warnings"]
    assert len(cli) == len(rows)
    for a, b in zip(rows, cli):
        assert (a["protocol"], a["measure"], a["chain"], a["decision"], a["decision_bound"], a["n"]) == \
            (b["protocol"], b["measure"], b["chain"], b["decision"], b["decision_bound"], b["n"])
        for key in ("accuracy", "accuracy_mean", "effect_size", "error_upper_bound", "p_value"):
            assert (a[key] is None) == (b[key] is None), key
            if a[key] is not None:
                assert math.isclose(a[key], b[key], rel_tol=1e-5, abs_tol=1e-9), (key, a, b)


def test_compare_weight_matching_runs_without_data(imported, tmp_path):
    r = run_cli("compare", f"zoo_dir={imported}", "compare.measures=[weight_matching,cka]", "compare.seeds=3",
                "compare.barrier_pairs=2", *(f"protocol.{k}={v}" for k, v in SMALL.items()), "protocol.repeats=1",
                "progress=false", "logger=none", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert any("cka skipped" in ln and "need the nets' data" in ln for ln in warned), r.stderr
    assert any("loss barriers skipped" in ln for ln in warned), r.stderr
    rows = json.loads((tmp_path / "report.json").read_text())
    assert {r["measure"] for r in rows} == {"weight_matching"}
    pairs = list(csv.DictReader(open(tmp_path / "compare.csv")))
    assert {p["measure"] for p in pairs} == {"weight_matching", "weight_naive"}


def test_import_says_what_cannot_be_mapped(trained, tmp_path):
    folder, _, _ = trained
    with pytest.raises(ConfigError, match="cannot map"):  # the default MLP has 4 layers, the nets 3
        import_nets(folder, None, tmp_path / "z", arch="mlp", log=None)
    with pytest.raises(ConfigError, match=r"shape \(16, 64\).*arch.hidden="):
        import_nets(folder, None, tmp_path / "z", arch="mlp", overrides=["hidden=8", "depth=3"], log=None)
    assert not (tmp_path / "z").exists()  # refused before anything is written
    torch.save(plain_mlp(), folder / "whole.pt")  # a whole pickled module: weights_only cannot load it
    (tmp_path / "index.csv").write_text("file,task,seed\nwhole.pt,0,0\n")
    with pytest.raises(ZooError, match=r"weights_only=True.*whole pickled module.*state_dict"):
        import_nets(folder, tmp_path / "index.csv", tmp_path / "z", arch=plain_mlp(), log=None)


def test_import_with_a_template_module(trained, tmp_path):
    folder, nets, _ = trained
    zoo_dir = import_nets(folder, None, tmp_path / "z", arch=plain_mlp(), log=None)
    zoo = Zoo(zoo_dir)
    assert zoo.head["arch"]["name"] == "sequential" and verify_zoo(zoo_dir).ok
    assert list(zoo.template.state_dict()) == list(nets[0].state_dict())
    got = chain_features(zoo.net(zoo.rows[0]))
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, chain_features(nets[0])))


def test_safetensors_checkpoints_map_in_layer_order(tmp_path):
    """safetensors stores names sorted ("10.weight" before "2.weight"): modules are put back in
    natural order before they are mapped onto the arch's."""
    from safetensors.torch import save_file

    deep = [nn.Linear(64, 8)] + [m for _ in range(5) for m in (nn.ReLU(), nn.Linear(8, 8))] + [nn.ReLU(), nn.Linear(8, 2)]
    lines = ["file,task,seed"]
    nets = []
    for t in range(2):
        torch.manual_seed(t)
        nets.append(nn.Sequential(*[m if not isinstance(m, nn.Linear) else nn.Linear(m.in_features, m.out_features)
                                    for m in deep]))
        save_file({k: v.contiguous() for k, v in nets[-1].state_dict().items()}, tmp_path / f"n{t}.safetensors")
        lines.append(f"n{t}.safetensors,{t},0")
    (tmp_path / "index.csv").write_text("\n".join(lines) + "\n")
    said = []
    zoo = Zoo(import_nets(tmp_path, None, tmp_path / "z", arch="mlp", overrides=["hidden=8", "depth=7"],
                          log=said.append))
    assert "0 -> 1, 2 -> 3, 4 -> 5, 6 -> 7, 8 -> 9, 10 -> 11, 12 -> 13" in said[0]
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.allclose(zoo.net(zoo.rows[1])(x), nets[1](x), atol=1e-6)


def test_one_call_on_features_warns_about_few_training_nets(capfd):
    g = torch.Generator().manual_seed(0)
    tasks = [t for t in range(4) for _ in range(4)]
    centers = torch.randn(4, 12, generator=g) * 3
    feats = centers[tasks] + torch.randn(len(tasks), 12, generator=g)
    with pytest.warns(UserWarning, match="only 2 training net"):
        result = htt.test(feats, tasks, protocol={"train_seeds": 2, "n_permutations": 9, "repeats": 1,
                                                  "protocols": ["classification"]})
    assert any("only 2 training net" in w for w in result["meta"]["warnings"])
    assert {(r["measure"], r["chain"]) for r in result["rows"]} == {("features", 1), ("features", "all")}
    assert "GPU available" not in "".join(capfd.readouterr())


def test_one_call_errors_name_the_fix():
    with pytest.raises(ConfigError, match="one task label per net"):
        htt.test(torch.zeros(5, 3), [0, 1])
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

    with pytest.raises(ConfigError, match=r"template module '<root>' \(Custom\).*pass its features"):
        htt.test([Custom(), Custom()], [0, 1])
    with pytest.raises(ChainError, match="pass an nn.Module"):
        chain_features(plain_mlp().state_dict())
