"""Every read of a zoo checks its weight files against the manifest: a flipped data byte stops
HTT with one line naming the file; a zoo_dir that is a file is one line, before any work."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from safetensors.torch import load as st_load

from tests.conftest import run_cli
from tests.test_cli_errors import only_error_line
from weightsim.chains import ChainOptions
from weightsim.data.digits import digits
from weightsim.errors import ZooError
from weightsim.htt.run import run_htt
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
from weightsim.nets.mlp import MLP
from weightsim.zoo.generate import ZooConfig, generate_zoo
from weightsim.zoo.store import ZooReader
from weightsim.zoo.verify import verify_zoo


def small_zoo(root: Path) -> Path:
    """2 tasks x 3 seeds of a small MLP, in populations of 2 (3 weight files)."""
    taskset = digits(train_tasks=2, unseen_tasks=0)
    build = partial(MLP, input_shape=taskset.input_shape, num_classes=2, hidden=8, depth=3)
    ident = {"dataset": {"name": "digits", "config": {}},
             "arch": {"name": "mlp", "config": {"_target_": "weightsim.nets.mlp.MLP", "hidden": 8, "depth": 3}},
             "tasks": [t.meta() for t in taskset.tasks], "config_hash": "i", "input_shape": [64], "num_classes": 2}
    return generate_zoo(build, taskset, ZooConfig(seeds=3, epochs=2, population_size=2, accelerator="cpu"), root,
                        ident, progress=False)


@pytest.fixture(scope="module")
def flipped(tmp_path_factory) -> tuple[Path, Path]:
    """A small zoo with one bit flipped in the tensor data of one weight file (its header intact,
    so the file still parses: only the checksum can tell)."""
    root = small_zoo(tmp_path_factory.mktemp("zoo") / "z")
    target = sorted((root / "weights").glob("*.safetensors"))[1]
    data = bytearray(target.read_bytes())
    before = st_load(bytes(data))
    data[-3] ^= 0x01  # inside the last tensor's data
    target.write_bytes(bytes(data))
    after = st_load(target.read_bytes())
    assert any(not before[k].equal(after[k]) for k in before)  # a weight changed, the file still parses
    return root, target


def test_a_read_refuses_a_flipped_byte_naming_the_file_and_verify(flipped):
    root, target = flipped
    with pytest.raises(ZooError) as e:
        ZooReader(root).load()
    assert str(target) in str(e.value) and f"weightsim-zoo verify zoo_dir={root}" in str(e.value)
    ZooReader(root).load(ZooReader(root).rows[:1])  # other files still read
    assert ZooReader(root, verify=False).load()  # the escape hatch reads it as it is
    assert any(str(target) in p for p in verify_zoo(root).problems)


def test_protocol_verify_false_lets_htt_read_an_altered_zoo(flipped):
    root, _ = flipped
    pc = dict(protocols=["classification"], n_permutations=0, repeats=1, measures=["raw"])
    with pytest.raises(ZooError, match="does not match its manifest checksum"):
        run_htt(str(root), ProtocolConfig(**pc), ClassifierConfig(max_iter=50), ChainOptions(), progress=False)
    rows = run_htt(str(root), ProtocolConfig(**pc, verify=False), ClassifierConfig(max_iter=50), ChainOptions(),
                   progress=False)["rows"]
    assert rows and all(r["protocol"] == "classification" for r in rows)


def test_htt_on_a_flipped_byte_exits_2_with_one_line_naming_the_file(flipped, tmp_path):
    root, target = flipped
    res = run_cli("htt", f"zoo_dir={root}", f"hydra.run.dir={tmp_path / 'run'}", "logger=none", "progress=false")
    line = only_error_line(res)
    assert str(target) in line and "weightsim-zoo verify" in line, line
    assert not (tmp_path / "run" / "report.md").exists()


@pytest.mark.parametrize("app,below", [("zoo", False), ("zoo", True), ("htt", False)])
def test_zoo_dir_that_is_a_file_is_one_line(app, below, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("not a zoo")
    zoo_dir = f / "zoo" if below else f
    res = run_cli(app, f"zoo_dir={zoo_dir}", f"hydra.run.dir={tmp_path / 'run'}", "logger=none", "progress=false")
    line = only_error_line(res)
    assert line.startswith(f"error: zoo_dir={zoo_dir} ") and ("is a file" in line or f"below {f}" in line), line
    assert "not a directory" in line
    assert not (tmp_path / "run" / "zoo").exists()  # refused before any work


def test_verify_of_a_file_says_so(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("not a zoo")
    assert verify_zoo(f).problems == [f"{f}: a file, not a zoo directory"]
    assert verify_zoo(tmp_path / "nope").problems == [f"{tmp_path / 'nope'}: no such directory"]
