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
from weightsim.errors import ConfigError, DataError, WeightsimWarning

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
    with pytest.warns(WeightsimWarning, match=r"21 of 21 images are color .* but dataset.channels=1 reduces them"):
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
    with pytest.raises(DataError, match=r"dog/0.png is unreadable .*: replace or remove it"):
        image_folder(str(root), train_tasks=2, unseen_tasks=0)
    with pytest.raises(ConfigError, match=r"7 tasks requested but the 'consecutive' grouping of 5 classes into "
                                          r"groups of 2 gives only 2: .*or set them to null"):
        image_folder(str(root), train_tasks=5, unseen_tasks=2)


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
    ts = arrays(str(f), normalize="channel", train_tasks=2, unseen_tasks=0)
    assert ts.x.shape == (12, 2, 3, 3) and ts.tasks[0].class_names == ["a", "b"]
    assert ts.tasks[0].train_idx.tolist() == [0, 4, 1, 5] and ts.tasks[0].test_idx.tolist() == [8, 9]
    train = ts.x[:8]
    assert train.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # statistics of the training arrays


def test_arrays_tokens(tmp_path: Path):
    x = np.array([[1, 2, 0], [3, 0, 0], [4, 4, 4], [2, 1, 0]] * 3)
    ts = arrays(str(save_npz(tmp_path / "t.npz", x=x, y=np.tile([0, 1, 2, 3], 3))), tokens=True, train_tasks=2,
                unseen_tasks=0)
    assert ts.x.dtype == torch.int64 and ts.info == {"vocab_size": 5, "max_len": 3} and torch.equal(ts.x, torch.from_numpy(x))


def test_arrays_errors(tmp_path: Path):
    with pytest.raises(DataError, match=r"no file .*missing.npz"):
        arrays(str(tmp_path / "missing.npz"))
    f = save_npz(tmp_path / "a.npz", x=np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"a.npz has no 'y' array \(it has x.*np.savez\('data.npz', x=x, y=y\)"):
        arrays(str(f))
    np.save(tmp_path / "one.npy", np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"one.npy is a single array \(4, 2\) \(.npy\), not a .npz with x .*np.savez"):
        arrays(str(tmp_path / "one.npy"))
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
    x = np.ones((12, 2))
    x[7, 1] = np.nan
    with pytest.raises(DataError, match=r"nan.npz has NaN or inf .* in 1 row\(s\), the first row 7 of x: drop"):
        arrays(str(save_npz(tmp_path / "nan.npz", x=x, y=np.arange(12) % 4)))
    with pytest.raises(ConfigError, match="normalize='per-pixel'"):
        arrays(str(f), normalize="per-pixel")


def write_gray_folder(root: Path, n_classes: int, n: int = 3, mode: str = "L") -> Path:
    """root/c<i>/<k>.png, n images per class stored in PIL ``mode``, pixel value 20 * i + k."""
    for c in range(n_classes):
        (root / f"c{c}").mkdir(parents=True)
        for k in range(n):
            Image.new(mode, (4, 4), 20 * c + k).save(root / f"c{c}" / f"{k}.png")
    return root


def test_image_folder_detects_grayscale_and_warns_when_channels_do_not_match(tmp_path: Path, recwarn):
    gray = write_gray_folder(tmp_path / "gray", 4)
    ts = image_folder(str(gray), normalize=False)  # channels: null detects the stored single channel
    assert ts.input_shape == (1, 4, 4) and not [w for w in recwarn if w.category is WeightsimWarning
                                                and "grayscale" in str(w.message)]
    offset = ts.x[:, 0, 0, 0] * 255 - 20 * ts.y.float()  # the stored gray value k of image k, unchanged
    assert ((offset - offset.round()).abs() < 1e-3).all() and offset.min() >= 0 and offset.max() <= 2
    with pytest.warns(WeightsimWarning, match=r"all 12 images are grayscale \(e.g. c0/0.png\) but dataset.channels=3 "
                                             r"reads each as 3 equal channels: set dataset.channels=1"):
        three = image_folder(str(gray), channels=3, normalize=False)
    assert three.input_shape == (3, 4, 4) and torch.equal(three.x[:, 0], three.x[:, 2])
    Image.new("RGB", (4, 4), (200, 10, 10)).save(gray / "c3" / "red.png")
    with pytest.warns(WeightsimWarning, match=r"12 of 13 images are grayscale \(e.g. c0/0.png\), the others color: "
                                             r"the gray ones are read as RGB"):
        mixed = image_folder(str(gray), normalize=False)
    assert mixed.input_shape == (3, 4, 4) and torch.equal(mixed.x[:12, 0], mixed.x[:12, 1])
    with pytest.warns(WeightsimWarning, match=r"1 of 13 images are color \(e.g. c3/red.png\) but dataset.channels=1"):
        assert image_folder(str(gray), channels=1).input_shape == (1, 4, 4)


def test_image_folder_warns_when_alpha_is_dropped(tmp_path: Path):
    root = write_gray_folder(tmp_path / "rgba", 4, mode="RGBA")
    with pytest.warns(WeightsimWarning, match=r"12 of 12 images have an alpha channel \(e.g. c0/0.png\); it is dropped"):
        ts = image_folder(str(root), train_tasks=2, unseen_tasks=0)
    assert ts.input_shape == (3, 4, 4)


def test_user_data_defaults_give_retrieval_three_unseen_tasks(tmp_path: Path):
    ts = image_folder(str(write_gray_folder(tmp_path / "ten", 10)))  # 10 classes: 5 pairs
    assert [t.role for t in ts.tasks] == ["train"] * 2 + ["unseen"] * 3
    y = np.repeat(np.arange(24), 3)  # 24 labels: 12 pairs -> 9 training + 3 unseen
    ts = arrays(str(save_npz(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(72, 3)), y=y)))
    assert len(ts.by_role("train")) == 9 and len(ts.by_role("unseen")) == 3
    assert [t.classes for t in ts.by_role("unseen")] == [[18, 19], [20, 21], [22, 23]]
    with pytest.warns(WeightsimWarning, match=r"arrays: 8 classes in 'consecutive' groups of 2 make 4 tasks; 4 for "
                                             r"training leave 0 for retrieval, which needs 3 unseen tasks and is skipped"):
        few = arrays(str(save_npz(tmp_path / "f.npz", x=np.zeros((24, 3)), y=np.repeat(np.arange(8), 3))))
    assert len(few.tasks) == 4 and not few.by_role("unseen")
