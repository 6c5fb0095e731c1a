"""Storage dtypes and streamed population files: a zoo stored in bfloat16 or float16 holds the
float32 nets rounded once, reads back as float32, never mixes with a zoo of another dtype, and
gives HTT the same decisions; every file is written in pieces with safetensors' own bytes."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load, save as st_save

from weightsim.chains import ChainOptions
from weightsim.data.digits import digits
from weightsim.errors import ConfigError, ZooError
from weightsim.htt.run import run_htt
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
from weightsim.nets.mlp import MLP
from weightsim.zoo import store
from weightsim.zoo.generate import ZooConfig, generate_zoo, tf32
from weightsim.zoo.store import ZooReader, write_safetensors
from weightsim.zoo.verify import verify_zoo

TASKSET = digits(train_tasks=3, unseen_tasks=2)
BUILD = partial(MLP, input_shape=TASKSET.input_shape, num_classes=2, hidden=8, depth=3)
IDENT = {"dataset": {"name": "digits", "config": {}},
         "arch": {"name": "mlp", "config": {"_target_": "weightsim.nets.mlp.MLP", "hidden": 8, "depth": 3}},
         "tasks": [t.meta() for t in TASKSET.tasks], "config_hash": "d", "input_shape": [64], "num_classes": 2}


def make(root: Path, **kw) -> Path:
    zc = ZooConfig(**{"seeds": 5, "epochs": 2, "population_size": 10, "accelerator": "cpu", **kw})
    return generate_zoo(BUILD, TASKSET, zc, root, IDENT, progress=False)


@pytest.fixture(scope="module")
def zoos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dtype")
    return {d: make(root / d, dtype=d) for d in ("float32", "bfloat16", "float16")}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_streamed_file_has_the_bytes_of_safetensors_save(dtype, monkeypatch):
    """Blocks of 40 bytes cut every tensor into several pieces; mixed dtypes exercise the header's
    tensor order; a member subset (a population some of whose nets another job wrote) too."""
    monkeypatch.setattr(store, "WRITE_BLOCK", 40)
    g = torch.Generator().manual_seed(0)
    tensors = {"1.weight": torch.randn(5, 3, 4, generator=g), "1.bias": torch.randn(5, 3, generator=g),
               "2.num_batches_tracked": torch.arange(5), "0.empty": torch.zeros(5, 0)}
    meta = {store.FORMAT: '{"population": "p", "version": 1}'}
    for members in (None, torch.tensor([4, 1, 2])):
        f = io.BytesIO()
        sha, size = write_safetensors(f, tensors, meta, dtype, members)
        chosen = {k: v if members is None else v[members] for k, v in tensors.items()}
        want = st_save({k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in chosen.items()},
                       metadata=meta)
        assert f.getvalue() == want and size == len(want) and sha == store.sha256_bytes(want)


def test_a_population_file_goes_out_one_block_at_a_time(monkeypatch):
    """No write (after the header) is larger than one block: the file is never whole in memory."""
    monkeypatch.setattr(store, "WRITE_BLOCK", 4096)
    sizes = []

    class Recorder(io.BytesIO):
        def write(self, b) -> int:
            sizes.append(len(memoryview(b).cast("B")))
            return super().write(b)

    tensors = {"w": torch.randn(64, 32, 32), "b": torch.randn(64, 32)}  # 256 KiB + 8 KiB of float32
    f = Recorder()
    write_safetensors(f, tensors, {"m": "x"}, torch.bfloat16)
    assert max(sizes[1:]) <= 4096 and len(sizes) > 32
    assert sum(sizes) == len(f.getvalue()) == len(st_save({k: v.bfloat16() for k, v in tensors.items()},
                                                         metadata={"m": "x"}))


def test_a_low_precision_zoo_holds_the_float32_nets_rounded_once(zoos):
    ref = ZooReader(zoos["float32"])
    for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        reader = ZooReader(zoos[name])
        assert reader.dtype == name and reader.head["training"]["dtype"] == name
        assert verify_zoo(zoos[name]).ok, verify_zoo(zoos[name]).text()
        files = sorted((zoos[name] / "weights").glob("*.safetensors"))
        assert all(v.dtype == dtype for v in st_load(files[0].read_bytes()).values())  # an MLP: floats only
        ref_bytes = sum(f.stat().st_size for f in (zoos["float32"] / "weights").glob("*.safetensors"))
        assert sum(f.stat().st_size for f in files) < 0.6 * ref_bytes  # 2 bytes a weight, not 4
        got, want = reader.load(), ref.load()
        for k in want:  # the same training (same config, same device): the stored nets differ only by rounding
            assert got[k].dtype == torch.float32
            assert torch.equal(got[k], want[k].to(dtype).float()), k
        strip = lambda rows: [{k: v for k, v in r.items() if k not in ("sha256", "bytes", "wall_time")}  # noqa: E731
                              for r in rows]
        assert strip(reader.rows) == strip(ref.rows)  # accuracies are measured in float32, before storing
    assert "dtype" not in ref.head["training"]  # float32 zoos keep the identity they always had


def test_a_zoo_never_mixes_storage_dtypes(zoos):
    with pytest.raises(ZooError, match=r"made for training.*\"dtype\": \"bfloat16\".*asks for training.*"
                                       r"\"dtype\": \"float32\""):
        make(zoos["bfloat16"])
    with pytest.raises(ZooError, match=r"\"dtype\": \"float32\".*\"dtype\": \"float16\""):
        make(zoos["float32"], dtype="float16")
    with pytest.raises(ConfigError, match=r"zoo.dtype='float64': choose from float32, bfloat16, float16"):
        ZooConfig(dtype="float64")


def test_htt_decides_the_same_on_a_bfloat16_zoo(zoos):
    """Per chain and protocol, the same decision and an accuracy within 0.005 (on this small zoo:
    the same accuracy, a test set of a few nets has no finer step)."""
    pc = ProtocolConfig(queries=2, n_permutations=3, retrieval_permutations=50, repeats=1)
    res = {d: run_htt(str(zoos[d]), pc, ClassifierConfig(max_iter=100), ChainOptions(), progress=False)["rows"]
           for d in ("float32", "bfloat16")}
    key = lambda r: (r["protocol"], r["measure"], r["chain"])  # noqa: E731
    a, b = ({key(r): r for r in res[d]} for d in ("float32", "bfloat16"))
    assert a.keys() == b.keys() and len(a) > 4
    for k in a:
        assert a[k]["decision"] == b[k]["decision"], k
        assert abs(a[k]["accuracy"] - b[k]["accuracy"]) <= 0.005, (k, a[k]["accuracy"], b[k]["accuracy"])


def test_tf32_is_set_only_inside_and_restored():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with tf32(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with tf32(False):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
