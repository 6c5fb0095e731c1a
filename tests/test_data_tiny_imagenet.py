"""Tiny ImageNet loader on a fixture written here in the official layout (JPEGs, wnids, val annotations)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from weightsim.data import tiny_imagenet as tin
from weightsim.data.tiny_imagenet import MEAN, STD, tiny_imagenet
from weightsim.errors import ConfigError, DataError

WNIDS = [f"n0{i:07d}" for i in (5, 3, 9, 1, 7, 2, 8, 4, 12, 10, 11, 6)]  # deliberately not sorted


def color(c: int, k: int) -> tuple[int, int, int]:
    return (20 + 18 * c, 40 + 10 * k, 220 - 18 * c)


def write_tiny(root: Path, n_train: int = 3, n_val: int = 2) -> Path:
    """A tiny-imagenet-200 folder: 12 classes; flat-colour 64x64 JPEGs (quality 100, nearly lossless);
    the first train image of class 1 is grayscale, as about 2 % of the originals are."""
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {c}, other name\n" for c, w in enumerate(WNIDS)))
    ann = []
    for c, w in enumerate(WNIDS):
        img_dir = root / "train" / w / "images"
        img_dir.mkdir(parents=True)
        boxes = []
        for k in range(n_train):
            im = Image.new("RGB", (64, 64), color(c, k))
            if c == 1 and k == 0:
                im = Image.new("L", (64, 64), 100)
            im.save(img_dir / f"{w}_{k}.JPEG", quality=100)
            boxes.append(f"{w}_{k}.JPEG\t0\t0\t63\t63\n")
        (root / "train" / w / f"{w}_boxes.txt").write_text("".join(boxes))
        for k in range(n_val):
            name = f"val_{c * n_val + k}.JPEG"
            Image.new("RGB", (64, 64), color(c, 9)).save(root / "val" / "images" / name, quality=100)
            ann.append(f"{name}\t{w}\t0\t0\t63\t63\n")
    (root / "val" / "val_annotations.txt").write_text("".join(reversed(ann)))
    return root


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_tiny(tmp_path / "tiny-imagenet-200")


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255


def test_shapes_groups_and_split(tiny_dir: Path):
    ts = tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=1)
    assert ts.x.shape == (12 * 5, 3, 64, 64) and ts.x.dtype == torch.float32 and ts.input_shape == (3, 64, 64)
    assert [t.classes for t in ts.tasks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]  # wnids.txt order
    assert [t.role for t in ts.tasks] == ["train", "train", "unseen"]
    assert ts.tasks[0].class_names[0] == f"{WNIDS[0]} thing 0"
    raw = unnormalize(ts.x)
    for t in ts.tasks:
        assert len(t.train_idx) == 12 and len(t.test_idx) == 8
        assert torch.equal(torch.bincount(t.train_y), torch.tensor([3, 3, 3, 3]))
        for idx, y in ((t.train_idx, t.train_y), (t.test_idx, t.test_y)):
            cls = torch.tensor(t.classes)[y]
            assert torch.equal(ts.y[idx], cls)
            # the red channel encodes the class (JPEG at quality 100: within a few levels)
            gray = (cls == 1) & (raw[idx, 0, 10, 10] - 100).abs().lt(3)
            assert ((raw[idx, 0, 10, 10] - (20 + 18 * cls)).abs().lt(3) | gray).all()
        # val images (green 40 + 90) are the test split, train images are not
        assert (raw[t.test_idx, 1, 0, 0] - 130).abs().lt(3).all()
        assert not (raw[t.train_idx, 1, 0, 0] - 130).abs().lt(3).any()


def test_grayscale_becomes_three_equal_channels(tiny_dir: Path):
    ts = tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0, normalize=False)
    i = int((ts.y == 1).nonzero()[0])  # first train image of class 1 (sorted names): the gray one
    assert torch.allclose(ts.x[i, 0], ts.x[i, 1], atol=1 / 255) and torch.allclose(ts.x[i, 1], ts.x[i, 2], atol=1 / 255)
    assert ts.x[i].mean().item() == pytest.approx(100 / 255, abs=2 / 255)


def test_resize_to_32_averages(tiny_dir: Path):
    big = tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0)
    small = tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0, size=32)
    assert small.x.shape == (40, 3, 32, 32) and small.input_shape == (3, 32, 32)
    pooled = torch.nn.functional.avg_pool2d(big.x, 2)
    assert (pooled - small.x).abs().max() < 0.05  # box filter = 2x2 average, up to uint8 rounding
    with pytest.raises(ConfigError, match="dataset.size=65"):
        tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0, size=65)


def test_only_used_classes_are_decoded_and_train_per_class(tiny_dir: Path):
    ts = tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0, classes_per_task=2, train_per_class=2)
    assert sorted(set(ts.y.tolist())) == [0, 1, 2, 3] and ts.x.shape[0] == 4 * (2 + 2)
    assert all(len(t.train_idx) == 4 for t in ts.tasks)


def test_decoded_images_are_cached_and_rebuilt_when_an_image_changes(tiny_dir: Path, tmp_path: Path,
                                                                     monkeypatch):
    monkeypatch.setenv("WEIGHTSIM_CACHE", str(tmp_path / "cache"))
    calls = []
    real = tin.decode
    monkeypatch.setattr(tin, "decode", lambda p, size: calls.append(p) or real(p, size))
    load = lambda **kw: tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0, **kw)  # noqa: E731
    first = load()
    n = len(calls)
    (cached,) = (tmp_path / "cache").glob("tiny_imagenet-*.npy")
    assert n == 40 and np.load(cached, allow_pickle=False).shape == (40, 64, 64, 3)
    again = load()
    assert len(calls) == n and torch.equal(again.x, first.x)  # read back, nothing decoded
    load(size=32)
    assert len(calls) == 2 * n  # another size is another entry
    # an image rewritten with other pixels changes the key: decoded again, and the new pixels show
    img = sorted((tiny_dir / "train" / WNIDS[0] / "images").glob("*.JPEG"))[0]
    Image.new("RGB", (64, 64), (250, 250, 250)).save(img, quality=95)
    changed = load()
    assert len(calls) == 3 * n and not torch.equal(changed.x, first.x)
    # a corrupt cache file is rebuilt, not trusted; cache=false neither reads nor writes
    for f in (tmp_path / "cache").glob("*.npy"):
        f.write_bytes(b"not numpy")
    assert torch.equal(load().x, changed.x) and len(calls) == 4 * n
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.npy"))
    load(cache=False)
    assert len(calls) == 5 * n
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.npy")) == before


def test_too_many_tasks_for_the_subset(tiny_dir: Path):
    with pytest.raises(ConfigError, match="only 3: lower dataset.train_tasks"):
        tiny_imagenet(str(tiny_dir))  # 40 + 10 tasks of 4 need 200 classes


def test_missing_folder(tmp_path: Path):
    with pytest.raises(DataError) as e:
        tiny_imagenet(str(tmp_path / "none"))
    msg = str(e.value)
    assert "no folder" in msg and "wnids.txt" in msg and "val_annotations.txt" in msg
    assert tin.SOURCE.url in msg and "dataset.download=true" in msg


def test_missing_annotations_named(tiny_dir: Path):
    (tiny_dir / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError, match=r"has no val/val_annotations.txt"):
        tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0)


def test_partial_class_folder_named(tiny_dir: Path):
    for p in (tiny_dir / "train" / WNIDS[2] / "images").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=rf"train/{WNIDS[2]}/images has no JPEG images"):
        tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0)


def test_missing_val_image_named(tiny_dir: Path):
    (tiny_dir / "val" / "images" / "val_3.JPEG").unlink()
    with pytest.raises(DataError, match=r"val_3.JPEG is missing"):
        tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0)


def test_corrupt_jpeg_named(tiny_dir: Path):
    f = tiny_dir / "train" / WNIDS[3] / "images" / f"{WNIDS[3]}_1.JPEG"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DataError, match=rf"{WNIDS[3]}_1.JPEG is unreadable"):
        tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0)


def test_corrupt_annotations_named(tiny_dir: Path):
    (tiny_dir / "val" / "val_annotations.txt").write_text("val_0.JPEG n0000005\nbroken line\n")
    with pytest.raises(DataError, match=r"val_annotations.txt line 1 is not"):
        tiny_imagenet(str(tiny_dir), train_tasks=2, unseen_tasks=0)


def test_download_from_zip(tmp_path: Path, monkeypatch):
    src = write_tiny(tmp_path / "src" / "tiny-imagenet-200", n_train=1, n_val=1)
    archive = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(src.rglob("*")):
            z.write(p, p.relative_to(src.parent).as_posix())
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(tin, "SOURCE", tin.SOURCE.__class__("tiny_imagenet", archive.as_uri(), md5,
                                                          "tiny-imagenet-200"))
    target = tmp_path / "data" / "tiny-imagenet-200"
    ts = tiny_imagenet(str(target), download=True, train_tasks=2, unseen_tasks=0)
    assert ts.x.shape == (16, 3, 64, 64) and (target / "wnids.txt").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["tiny-imagenet-200"]
    np.testing.assert_array_equal(
        np.asarray(Image.open(target / "val" / "images" / "val_0.JPEG")),
        np.asarray(Image.open(src / "val" / "images" / "val_0.JPEG")))
