"""Zoo files: determinism, resume without duplicates, verify, pickle refusal, identity, divergence."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load

from weightsim.data.digits import digits
from weightsim.errors import ZooError
from weightsim.htt.study import usable_rows
from weightsim.nets.mlp import MLP
from weightsim.zoo.generate import ZooConfig, generate_zoo, plan_populations
from weightsim.zoo.store import ZooReader, ZooWriter
from weightsim.zoo.view import Zoo
from weightsim.zoo.verify import verify_zoo

TASKSET = digits(train_tasks=2, unseen_tasks=1)
BUILD = partial(MLP, input_shape=TASKSET.input_shape, num_classes=2, hidden=8, depth=2)


def identity(arch: str = "mlp", dataset: str = "digits") -> dict:
    return {"dataset": {"name": dataset, "config": {"train_tasks": 2}},
            "arch": {"name": arch, "config": {"hidden": 8, "depth": 2}},
            "tasks": [t.meta() for t in TASKSET.tasks], "config_hash": "test"}


def make(root: Path, **kw) -> Path:
    zc = ZooConfig(**{"seeds": 3, "epochs": 0.3, "population_size": 2, "accelerator": "cpu", **kw})
    return generate_zoo(BUILD, TASKSET, zc, root, identity(), progress=False)


def snapshot(root: Path) -> dict[str, object]:
    """Every zoo file's content; manifest rows without wall_time (the only field that is a timing)."""
    out: dict[str, object] = {"zoo.json": (root / "zoo.json").read_bytes()}
    for f in sorted((root / "weights").iterdir()):
        if f.suffix == ".safetensors":
            out[f.name] = f.read_bytes()
        elif f.suffix == ".json":
            out[f.name] = [{k: v for k, v in r.items() if k != "wall_time"} for r in json.loads(f.read_text())]
    return out


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("zoo") / "z")


def test_same_config_gives_identical_files(zoo, tmp_path):
    again = make(tmp_path / "again")
    assert snapshot(again) == snapshot(zoo)
    assert len([k for k in snapshot(zoo) if k.endswith(".safetensors")]) == 5  # 9 nets in pairs
    other = make(tmp_path / "other", base_seed=1)  # not vacuous: another seed gives other bytes
    assert {k: v for k, v in snapshot(other).items() if k.endswith(".safetensors")} != \
           {k: v for k, v in snapshot(zoo).items() if k.endswith(".safetensors")}


def test_rerun_trains_nothing_and_resume_has_no_duplicates(zoo, tmp_path):
    before = snapshot(zoo)
    make(zoo)  # complete: a rerun changes nothing
    assert snapshot(zoo) == before
    # a zoo with some populations missing (as after a crash), resumed with another population size
    part = tmp_path / "part"
    make(part)
    for f in sorted((part / "weights").glob("pop_t001*"))[:2] + sorted((part / "weights").glob("pop_t002*")):
        f.unlink()
    left = {(r["task"], r["seed"]) for r in ZooReader(part).rows}
    assert 0 < len(left) < 9
    make(part, population_size=3)
    rows = ZooReader(part).rows
    assert sorted((r["task"], r["seed"]) for r in rows) == [(t, s) for t in range(3) for s in range(3)]
    full, resumed = ZooReader(zoo).load(), ZooReader(part).load()
    for k in full:  # the same weights up to float tolerance (other population sizes batch differently)
        torch.testing.assert_close(full[k], resumed[k], rtol=1e-5, atol=1e-6)


def test_plan_skips_done_nets():
    zc = ZooConfig(seeds=3, population_size=2)
    plan = plan_populations(TASKSET, zc, 2, {(0, 0), (0, 1)})
    nets = [n for _, ns in plan for n in ns]
    assert (0, 0) not in nets and len(nets) == 7 and plan[0][0] == "pop_t000s00002-t001s00000"


def test_verify_names_truncated_and_altered_files(zoo, tmp_path):
    assert verify_zoo(zoo).ok, verify_zoo(zoo).text()
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(zoo, bad)
    files = sorted((bad / "weights").glob("*.safetensors"))
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])  # truncated
    data = bytearray(files[1].read_bytes())
    data[-3] ^= 0x01  # one flipped bit in the weights
    files[1].write_bytes(bytes(data))
    files[2].unlink()  # missing
    rep = verify_zoo(bad)
    assert not rep.ok
    text = rep.text()
    assert f"{files[0]}: truncated" in text
    assert f"{files[1]}: checksum mismatch, content altered" in text
    assert f"{files[2]}: missing" in text
    assert len(rep.problems) == 3
    with pytest.raises(ZooError, match="checksum"):
        ZooReader(bad).load(verify=True)


def test_pickle_in_a_zoo_is_refused(zoo, tmp_path):
    import shutil
    bad = tmp_path / "pickled"
    shutil.copytree(zoo, bad)
    piece = sorted((bad / "weights").glob("*.json"))[0]
    target = bad / "weights" / piece.name.replace(".json", ".safetensors")
    torch.save(st_load(target.read_bytes()), target)  # a torch.save pickle under the safetensors name
    rows = json.loads(piece.read_text())
    from weightsim.zoo.store import sha256_bytes
    digest = sha256_bytes(target.read_bytes())
    piece.write_text(json.dumps([{**r, "sha256": digest, "bytes": target.stat().st_size} for r in rows]))
    with pytest.raises(ZooError, match="pickle"):
        ZooReader(bad).load()
    assert any("pickle" in p and str(target) in p for p in verify_zoo(bad).problems)
    # a pickle dropped beside the weights, and a manifest that points at it
    (bad / "weights" / "extra.pt").write_bytes(b"\x80\x04K\x01.")
    assert any("extra.pt: a pickle" in p for p in verify_zoo(bad).problems)
    piece.write_text(json.dumps([{**r, "file": "extra.pt"} for r in rows]))
    with pytest.raises(ZooError, match="not a .safetensors file: refused"):
        ZooReader(bad).load()
    # a manifest that points outside weights/ is refused by the loader and by verify alike
    outside = "../../" + target.name
    piece.write_text(json.dumps([{**r, "file": outside} for r in rows]))
    with pytest.raises(ZooError, match=r"names '\.\./\.\./.*', outside weights/: refused"):
        ZooReader(bad).load()
    assert any("outside weights/: refused" in p for p in verify_zoo(bad).problems)


def test_zoo_of_another_arch_or_dataset_is_refused_naming_both(zoo):
    with pytest.raises(ZooError, match=r"made for arch 'mlp'.*asks for arch 'plainnet5'"):
        ZooWriter(zoo, {**identity(arch="plainnet5"), "training": ZooConfig(epochs=0.3).training()})
    with pytest.raises(ZooError, match=r"made for dataset 'digits'.*asks for dataset 'cifar100'"):
        ZooWriter(zoo, {**identity(dataset="cifar100"), "training": ZooConfig(epochs=0.3).training()})
    with pytest.raises(ZooError, match=r"training.*lr"):
        make(zoo, lr=0.5)


def test_duplicate_nets_are_refused(zoo, tmp_path):
    import shutil
    dup = tmp_path / "dup"
    shutil.copytree(zoo, dup)
    piece = sorted((dup / "weights").glob("*.json"))[0]
    shutil.copy(piece, piece.with_name("copy.json"))
    with pytest.raises(ZooError, match="twice"):
        ZooReader(dup)
    assert any("duplicate" in p for p in verify_zoo(dup).problems)


def test_nets_already_written_by_another_job_are_left_out(tmp_path):
    """Two populations that overlap in one net (concurrent jobs with overlapping seed blocks): the
    second write keeps only its new nets, tensors and rows alike, so the zoo never holds a net twice."""
    w = ZooWriter(tmp_path / "z", identity())
    a = {"w": torch.arange(6.0).view(2, 3)}  # members (0, 0), (0, 1)
    b = {"w": torch.arange(6.0, 12.0).view(2, 3)}  # members (0, 1), (0, 2)
    row = lambda t, s: {"task": t, "seed": s, "train_acc": 1.0}  # noqa: E731
    assert w.write("pop_a", a, [row(0, 0), row(0, 1)]) == 2
    assert w.write("pop_b", b, [row(0, 1), row(0, 2)]) == 1
    assert w.write("pop_a", a, [row(0, 0), row(0, 1)]) == 0  # all on disk: nothing added, pop_a untouched
    r = ZooReader(tmp_path / "z")
    assert [(x["task"], x["seed"]) for x in r.rows] == [(0, 0), (0, 1), (0, 2)]
    got = r.load()["w"]
    assert torch.equal(got, torch.tensor([[0.0, 1, 2], [3, 4, 5], [9, 10, 11]]))  # (0, 2) is b's second member


def test_diverged_nets_are_flagged_and_left_out_of_htt(tmp_path):
    root = make(tmp_path / "div", lr=1e4, momentum=0.0)
    reader = ZooReader(root)
    flagged = [r for r in reader.rows if r["diverged"]]
    assert flagged, "lr=1e4 must make some nets diverge"
    rows, excluded = usable_rows(Zoo(root))
    assert excluded == len(flagged) and not any(r["diverged"] for r in rows)
    assert verify_zoo(root).ok  # flagged non-finite nets are not a storage problem


def test_population_size_follows_the_memory_budget():
    from weightsim.zoo.generate import size_population

    big = partial(MLP, input_shape=TASKSET.input_shape, num_classes=2, hidden=256, depth=3)
    mem = size_population(big, TASKSET, ZooConfig(population_size=1), 1000).memory
    params = sum(p.numel() for p in big().parameters()) * 4
    assert mem.train_member > 3 * params and mem.eval_sample > 0  # parameters, gradients, momentum + activations
    assert mem.data == TASKSET.x.numel() * 4  # the pool is counted
    bigger_batch = size_population(big, TASKSET, ZooConfig(population_size=1, batch_size=256), 1000).memory
    assert bigger_batch.train_member > mem.train_member  # activations grow with the batch
    budget = lambda k: (mem.train_peak(k) + 1) / 2**30  # noqa: E731  (just room for k members)
    small = size_population(big, TASKSET, ZooConfig(memory_budget_gb=budget(10)), 1000)
    large = size_population(big, TASKSET, ZooConfig(memory_budget_gb=budget(100)), 1000)
    # measured again for each call: allow one member either way (allocator rounding between runs)
    assert abs(small.population_size - 10) <= 1 and abs(large.population_size - 100) <= 1
    assert small.peak_bytes <= budget(10) * 2**30 * 1.01  # evaluation chunks are sized to fit too
    assert size_population(big, TASKSET, ZooConfig(memory_budget_gb=1e-6), 1000).population_size == 1
    assert size_population(big, TASKSET, ZooConfig(population_size=7), 1000).population_size == 7
    with pytest.raises(Exception, match="memory_budget_gb"):
        size_population(big, TASKSET, ZooConfig(memory_budget_gb=0), 1000)


def test_same_options_other_data_is_refused_naming_the_fingerprints(tmp_path):
    base = {"arch": {"name": "mlp", "config": {"hidden": 8}}, "training": {"lr": 0.1}, "config_hash": "h"}
    ZooWriter(tmp_path, {**base, "dataset": {"name": "cifar100", "config": {"size": 32}, "fingerprint": "aaaa"}})
    with pytest.raises(ZooError, match="fingerprint.*aaaa.*fingerprint.*bbbb|fingerprint.*bbbb.*fingerprint.*aaaa"):
        ZooWriter(tmp_path, {**base, "dataset": {"name": "cifar100", "config": {"size": 32}, "fingerprint": "bbbb"}})


def test_safetensors_whose_header_length_starts_with_0x80_is_not_a_pickle(tmp_path):
    """The first byte of a safetensors file is the low byte of its header length; 128 mod 256
    gives 0x80, the pickle protocol marker. Such a file is valid and must load."""
    from safetensors.torch import save

    from weightsim.zoo.store import check_safetensors_bytes

    found = None
    for width in range(1, 400):  # tensor names of growing length until the header length is 128 mod 256
        data = save({"w" * width: torch.zeros(2)})
        if data[0] == 0x80:
            found = data
            break
    assert found is not None
    check_safetensors_bytes(found, tmp_path / "x.safetensors")  # no error
    pickled = b"\x80\x04\x95" + b"\x00" * 40
    with pytest.raises(ZooError, match="pickle"):
        check_safetensors_bytes(pickled, tmp_path / "p.safetensors")
    with pytest.raises(ZooError, match="not a safetensors file"):
        check_safetensors_bytes(found[:9], tmp_path / "t.safetensors")
