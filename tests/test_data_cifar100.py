"""CIFAR-100 loader on fixtures written here in the official format (python pickles, protocol 2)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from weightsim.data import cifar100 as c100
from weightsim.data.cifar100 import MEAN, STD, cifar100
from weightsim.errors import ConfigError, DataError


def images(labels: np.ndarray, split: int) -> np.ndarray:
    """(N, 3072) uint8: sample i of class c in split s has every red pixel = c, green = s, blue = i."""
    x = np.zeros((len(labels), 3, 1024), dtype=np.uint8)
    x[:, 0] = labels[:, None]
    x[:, 1] = split
    x[:, 2] = np.arange(len(labels))[:, None] % 256
    return x.reshape(len(labels), 3072)


def write_cifar(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    """A cifar-100-python folder: n_train / n_test images per fine class, classes interleaved."""
    root.mkdir(parents=True)
    for name, n, s in (("train", n_train, 1), ("test", n_test, 2)):
        y = np.tile(np.arange(100), n)
        d = {"batch_label": f"{name} batch", "filenames": [f"img_{i}.png" for i in range(len(y))],
             "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist(), "data": images(y, s)}
        (root / name).write_bytes(pickle.dumps(d, protocol=2))
    meta = {"fine_label_names": [f"class{i:02d}" for i in range(100)],
            "coarse_label_names": [f"super{i}" for i in range(20)]}
    (root / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    return write_cifar(tmp_path / "cifar-100-python")


def test_shapes_tasks_and_split(cifar_dir: Path):
    ts = cifar100(str(cifar_dir), train_tasks=3, unseen_tasks=2)
    assert ts.input_shape == (3, 32, 32) and ts.x.dtype == torch.float32
    # only the 10 used classes are in the pool: 10 x (3 train + 2 test)
    assert ts.x.shape == (50, 3, 32, 32)
    assert sorted(set(ts.y.tolist())) == list(range(10))
    assert [t.classes for t in ts.tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [t.role for t in ts.tasks] == ["train"] * 3 + ["unseen"] * 2
    assert ts.tasks[1].class_names == ["class02", "class03"]
    raw = ts.x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    raw = (raw * 255).round()
    for t in ts.tasks:
        assert len(t.train_idx) == 6 and len(t.test_idx) == 4
        assert set(t.train_y.tolist()) == {0, 1} and set(t.test_y.tolist()) == {0, 1}
        # local label k is the task's k-th class; train samples come from the train file (green 1)
        for idx, y, split in ((t.train_idx, t.train_y, 1), (t.test_idx, t.test_y, 2)):
            cls = torch.tensor(t.classes)[y]
            assert torch.equal(raw[idx, 0, 0, 0], cls.float())
            assert torch.equal(ts.y[idx], cls)
            assert (raw[idx, 1] == split).all()


def test_normalization_constants(cifar_dir: Path):
    ts = cifar100(str(cifar_dir), train_tasks=2, unseen_tasks=0)
    i = int(ts.tasks[1].train_idx[0])  # a class-2 or class-3 image from the train file
    c = int(ts.y[i])
    assert ts.x[i, 0, 5, 7].item() == pytest.approx((c / 255 - MEAN[0]) / STD[0], abs=1e-6)
    assert ts.x[i, 1, 0, 0].item() == pytest.approx((1 / 255 - MEAN[1]) / STD[1], abs=1e-6)
    plain = cifar100(str(cifar_dir), train_tasks=2, unseen_tasks=0, normalize=False)
    assert plain.x[i, 0, 5, 7].item() == pytest.approx(c / 255, abs=1e-7)


def test_downscale(cifar_dir: Path):
    full = cifar100(str(cifar_dir), train_tasks=2, unseen_tasks=0)
    half = cifar100(str(cifar_dir), train_tasks=2, unseen_tasks=0, size=16)
    assert half.x.shape == (20, 3, 16, 16) and half.input_shape == (3, 16, 16)
    assert torch.allclose(half.x, torch.nn.functional.avg_pool2d(full.x, 2), atol=1e-6)
    with pytest.raises(ConfigError, match="dataset.size=33"):
        cifar100(str(cifar_dir), size=33)


def test_paper_default_is_50_pairs(cifar_dir: Path):
    ts = cifar100(str(cifar_dir))
    assert len(ts.tasks) == 50 and ts.tasks[49].classes == [98, 99]
    assert len(ts.by_role("train")) == 40 and len(ts.by_role("unseen")) == 10
    assert ts.x.shape[0] == 500


def test_combinations_grouping_is_fixed_by_task_seed(cifar_dir: Path):
    a = cifar100(str(cifar_dir), train_tasks=4, unseen_tasks=1, grouping="combinations", task_seed=3)
    b = cifar100(str(cifar_dir), train_tasks=4, unseen_tasks=1, grouping="combinations", task_seed=3)
    c = cifar100(str(cifar_dir), train_tasks=4, unseen_tasks=1, grouping="combinations", task_seed=4)
    assert [t.classes for t in a.tasks] == [t.classes for t in b.tasks] != [t.classes for t in c.tasks]
    used = {k for t in a.tasks for k in t.classes}
    assert set(a.y.tolist()) == used


def test_too_many_tasks(cifar_dir: Path):
    with pytest.raises(ConfigError, match="only 50"):
        cifar100(str(cifar_dir), train_tasks=50, unseen_tasks=1)


def test_missing_folder_names_layout_and_download(tmp_path: Path):
    with pytest.raises(DataError) as e:
        cifar100(str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "no folder" in msg and "nowhere" in msg and "train, test, meta" in msg
    assert c100.SOURCE.url in msg and "dataset.download=true" in msg and "\n" not in msg


def test_missing_file_is_named(cifar_dir: Path):
    (cifar_dir / "test").unlink()
    with pytest.raises(DataError, match=r"has no test \(expected layout"):
        cifar100(str(cifar_dir))


def test_data_dir_defaults_to_env(cifar_dir: Path, monkeypatch):
    monkeypatch.setenv("WEIGHTSIM_DATA", str(cifar_dir.parent))
    assert cifar100(None, train_tasks=2, unseen_tasks=0).x.shape[0] == 20


def test_truncated_pickle_is_named(cifar_dir: Path):
    data = (cifar_dir / "train").read_bytes()
    (cifar_dir / "train").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"train is corrupt"):
        cifar100(str(cifar_dir))


def test_label_count_mismatch_is_named(cifar_dir: Path):
    d = pickle.loads((cifar_dir / "test").read_bytes())
    d["fine_labels"] = d["fine_labels"][:-5]
    (cifar_dir / "test").write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(DataError, match=r"test has 200 images but 195 labels"):
        cifar100(str(cifar_dir))


def test_partial_copy_without_a_class(cifar_dir: Path):
    d = pickle.loads((cifar_dir / "test").read_bytes())
    keep = np.asarray(d["fine_labels"]) != 3
    d["fine_labels"] = np.asarray(d["fine_labels"])[keep].tolist()
    d["data"] = d["data"][keep]
    (cifar_dir / "test").write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(DataError, match=r"class 'class03' \(id 3\) of task 1 has no test samples"):
        cifar100(str(cifar_dir), train_tasks=2, unseen_tasks=1)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_cannot_run_code(cifar_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (cifar_dir / "meta").write_bytes(pickle.dumps({"fine_label_names": Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"meta is corrupt or not a CIFAR pickle .*(os|posix).system"):
        cifar100(str(cifar_dir))
    assert not (tmp_path / "PWNED").exists()


def test_bytes_keys_as_in_python2_pickles(cifar_dir: Path):
    d = pickle.loads((cifar_dir / "train").read_bytes())
    (cifar_dir / "train").write_bytes(pickle.dumps({k.encode(): v for k, v in d.items()}, protocol=2))
    assert cifar100(str(cifar_dir), train_tasks=2, unseen_tasks=0).x.shape[0] == 20


# -- download ----------------------------------------------------------------------------------
def make_archive(src: Path, dest: Path) -> str:
    with tarfile.open(dest, "w:gz") as t:
        t.add(src, arcname=src.name)
    return hashlib.md5(dest.read_bytes()).hexdigest()


def test_download_installs_verified_archive(tmp_path: Path, monkeypatch):
    src = write_cifar(tmp_path / "src" / "cifar-100-python", n_train=2, n_test=1)
    md5 = make_archive(src, tmp_path / "cifar-100-python.tar.gz")
    monkeypatch.setattr(c100, "SOURCE", c100.SOURCE.__class__(
        "cifar100", (tmp_path / "cifar-100-python.tar.gz").as_uri(), md5, "cifar-100-python"))
    target = tmp_path / "data" / "cifar-100-python"
    ts = cifar100(str(target), download=True, train_tasks=2, unseen_tasks=0)
    assert ts.x.shape[0] == 12 and (target / "meta").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["cifar-100-python"]  # no temp left


def test_download_checksum_mismatch_installs_nothing(tmp_path: Path, monkeypatch):
    src = write_cifar(tmp_path / "src" / "cifar-100-python", n_train=2, n_test=1)
    make_archive(src, tmp_path / "a.tar.gz")
    url = (tmp_path / "a.tar.gz").as_uri()
    monkeypatch.setattr(c100, "SOURCE", c100.SOURCE.__class__("cifar100", url, "0" * 32, "cifar-100-python"))
    target = tmp_path / "data" / "cifar-100-python"
    with pytest.raises(DataError, match=f"checksum mismatch for {url}"):
        cifar100(str(target), download=True)
    assert not target.exists() and list((tmp_path / "data").iterdir()) == []


def test_download_refuses_unsafe_archive(tmp_path: Path, monkeypatch):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as t:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"bad"))
    md5 = hashlib.md5(evil.read_bytes()).hexdigest()
    monkeypatch.setattr(c100, "SOURCE", c100.SOURCE.__class__("cifar100", evil.as_uri(), md5, "cifar-100-python"))
    with pytest.raises(DataError, match="unsafe member '../escaped.txt'"):
        cifar100(str(tmp_path / "data" / "cifar-100-python"), download=True)
    assert not (tmp_path / "data" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_download_never_overwrites_a_partial_folder(cifar_dir: Path):
    (cifar_dir / "test").unlink()
    with pytest.raises(DataError, match="exists but is incomplete; move it away"):
        cifar100(str(cifar_dir), download=True)
    assert (cifar_dir / "train").is_file()


def test_download_offline_is_one_clear_error(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(c100, "SOURCE", c100.SOURCE.__class__(
        "cifar100", (tmp_path / "absent.tar.gz").as_uri(), None, "cifar-100-python"))
    with pytest.raises(DataError, match="could not download .*absent.tar.gz"):
        cifar100(str(tmp_path / "data" / "cifar-100-python"), download=True)
