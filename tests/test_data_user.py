"""The two loaders for users' own data: image_folder (root/<class>/*.png|jpg) and arrays (.npz)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from weightsim.data.arrays import arrays
from weightsim.data.image_folder import image_folder
from weightsim.errors import ConfigError, DataError

CLASSES = ["cat", "dog", "eel", "fox", "gnu"]


def write_folder(root: Path, n: int = 4, size: tuple[int, int] = (10, 6)) -> Path:
    """root/<class>/<k>.png (lossless), pixel value 40 * class + k in every channel; one jpg per class."""
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for k in range(n):
            Image.new("RGB", size, (40 * c + k,) * 3).save(root / name / f"{k}.png")
        Image.new("RGB", size, (40 * c + 9,) * 3).save(root / name / "extra.JPG", quality=100)
        (root / name / "notes.txt").write_text("not an image")
    return root


def test_image_folder_tasks_and_values(tmp_path: Path):
    root = write_folder(tmp_path / "imgs")
    ts = image_folder(str(root), train_tasks=2, unseen_tasks=0, normalize=False)
    assert ts.input_shape == (3, 6, 10) and ts.x.shape == (4 * 5, 3, 6, 10) and ts.x.dtype == torch.float32
    assert [t.class_names for t in ts.tasks] == [["cat", "dog"], ["eel", "fox"]]
    for t in ts.tasks:
        assert len(t.train_idx) + len(t.test_idx) == 10 and torch.equal(torch.bincount(t.test_y), torch.tensor([1, 1]))
        for idx, y in ((t.train_idx, t.train_y), (t.test_idx, t.test_y)):
            cls = torch.tensor(t.classes)[y]
            v = ts.x[idx, 0, 0, 0] * 255
            assert ((v - 40 * cls.float()) >= -1).all() and ((v - 40 * cls.float()) <= 10).all()
    norm = image_folder(str(root), train_tasks=2, unseen_tasks=0)
    assert norm.x.mean(dim=(0, 2, 3)).abs().max() < 1e-4 and (norm.x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_image_folder_gray_and_resize(tmp_path: Path):
    root = write_folder(tmp_path / "imgs")
    Image.new("RGB", (20, 20), (3, 3, 3)).save(root / "cat" / "big.png")
    with pytest.raises(DataError, match=r"big.png is 20x20 but .*0.png is 10x6: set dataset.size"):
        image_folder(str(root), train_tasks=2, unseen_tasks=0)
    ts = image_folder(str(root), train_tasks=2, unseen_tasks=0, channels=1, size=[8, 12])
    assert ts.x.shape == (21, 1, 8, 12)


def test_image_folder_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="data_dir is required"):
        image_folder(None)
    with pytest.raises(DataError, match=r"no folder .*nothing \(expected layout: root/<class>"):
        image_folder(str(tmp_path / "nothing"))
    root = write_folder(tmp_path / "imgs")
    for p in (root / "dog").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"class folder .*dog has no images"):
        image_folder(str(root), train_tasks=2, unseen_tasks=0)
    (root / "dog" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"dog/0.png is unreadable"):
        image_folder(str(root), train_tasks=2, unseen_tasks=0)


def save_npz(path: Path, **arrs) -> Path:
    np.savez(path, **arrs)
    return path


def test_arrays_random_split_and_global_normalization(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(60, 5)).astype(np.float64)
    y = np.repeat([7, 3, 5, 9], 15)  # arbitrary label values: mapped to sorted order 3, 5, 7, 9
    ts = arrays(str(save_npz(tmp_path / "d.npz", x=x, y=y)), train_tasks=2, unseen_tasks=0)
    assert ts.x.dtype == torch.float32 and ts.input_shape == (5,)
    assert [t.class_names for t in ts.tasks] == [["3", "5"], ["7", "9"]]
    assert abs(float(ts.x.mean())) < 1e-5 and abs(float(ts.x.std()) - 1) < 1e-3
    assert ts.info["mean"] == pytest.approx(float(x.mean()), rel=1e-5)
    t = ts.tasks[1]
    assert len(t.test_idx) == 8 and torch.equal(ts.y[t.train_idx], torch.tensor(t.classes)[t.train_y])
    assert np.allclose(ts.x[t.test_idx].numpy() * ts.info["std"] + ts.info["mean"],
                       x[t.test_idx.numpy()], atol=1e-5)


def test_arrays_own_test_split_channel_norm_and_names(tmp_path: Path):
    x = np.arange(8 * 2 * 3 * 3, dtype=np.uint8).reshape(8, 2, 3, 3)
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    f = save_npz(tmp_path / "d.npz", x=x, y=y, x_test=x[:4], y_test=y[:4], class_names=np.array(["a", "b", "c", "d"]))
    ts = arrays(str(f), normalize="channel")
    assert ts.x.shape == (12, 2, 3, 3) and ts.tasks[0].class_names == ["a", "b"]
    assert ts.tasks[0].train_idx.tolist() == [0, 4, 1, 5] and ts.tasks[0].test_idx.tolist() == [8, 9]
    train = ts.x[:8]
    assert train.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # statistics of the training arrays


def test_arrays_tokens(tmp_path: Path):
    x = np.array([[1, 2, 0], [3, 0, 0], [4, 4, 4], [2, 1, 0]] * 3)
    ts = arrays(str(save_npz(tmp_path / "t.npz", x=x, y=np.tile([0, 1, 2, 3], 3))), tokens=True)
    assert ts.x.dtype == torch.int64 and ts.info == {"vocab_size": 5, "max_len": 3} and torch.equal(ts.x, torch.from_numpy(x))


def test_arrays_errors(tmp_path: Path):
    with pytest.raises(DataError, match=r"no file .*missing.npz"):
        arrays(str(tmp_path / "missing.npz"))
    f = save_npz(tmp_path / "a.npz", x=np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"a.npz has no 'y' array \(it has x"):
        arrays(str(f))
    f = save_npz(tmp_path / "b.npz", x=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match=r"x has 4 rows but its labels have shape \(3,\)"):
        arrays(str(f))
    data = save_npz(tmp_path / "c.npz", x=np.zeros((40, 2)), y=np.arange(40) % 4).read_bytes()
    (tmp_path / "c.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"c.npz is not a readable .npz"):
        arrays(str(tmp_path / "c.npz"))
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "p.npz", "w") as z:
        z.writestr("x.npy", buf.getvalue())
        z.writestr("y.npy", buf.getvalue())
    with pytest.raises(DataError, match=r"p.npz is not a readable .npz .*object arrays"):
        arrays(str(tmp_path / "p.npz"))
    with pytest.raises(ConfigError, match="normalize='per-pixel'"):
        arrays(str(f), normalize="per-pixel")
