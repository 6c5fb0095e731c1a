"""Tiny ImageNet from the official layout (``tiny-imagenet-200/``).

Classes are the wnids in ``wnids.txt`` order; task i is wnids 4i..4i+3 (paper default, 50 tasks of
4 classes). Train images come from ``train/<wnid>/images/*.JPEG``, test images from the labelled
``val/`` split (``val/val_annotations.txt``); the unlabelled ``test/`` split is not used. Only the
classes the tasks use are decoded. About 2 % of the images are grayscale: they are read as RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from weightsim.data.common import cached_uint8, channel_normalize, dataset_dir, files_key, read_image, require
from weightsim.data.download import Source
from weightsim.data.tasks import TaskSet, build_taskset, plan_groups
from weightsim.errors import ConfigError, DataError

FOLDER = "tiny-imagenet-200"
SOURCE = Source("tiny_imagenet", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                md5="90528d7ca1a48142e341f4ef8d21d0de", member=FOLDER)
LAYOUT = (f"{FOLDER}/ with wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
          f"val/val_annotations.txt")
# per-channel mean and std of the 100 000 training images (pixels in [0, 1])
MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2770, 0.2691, 0.2821)
NATIVE = 64


def read_wnids(root: Path) -> list[str]:
    """The class ids of ``wnids.txt``, in file order (the standard class order)."""
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().splitlines() if w.strip()]
    if not wnids:
        raise DataError(f"tiny_imagenet: {root / 'wnids.txt'} is empty")
    if len(set(wnids)) != len(wnids):
        raise DataError(f"tiny_imagenet: {root / 'wnids.txt'} lists a wnid twice")
    return wnids


def read_words(root: Path, wnids: list[str]) -> list[str]:
    """Readable class names ``"<wnid> <first word>"`` from ``words.txt`` (just the wnid without it)."""
    words: dict[str, str] = {}
    path = root / "words.txt"
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    return [f"{w} {words[w]}" if words.get(w) else w for w in wnids]


def read_val_annotations(root: Path) -> dict[str, list[str]]:
    """{wnid: [file name in val/images, ...]} from ``val/val_annotations.txt`` (sorted names)."""
    path = root / "val" / "val_annotations.txt"
    out: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise DataError(f"tiny_imagenet: {path} line {n} is not '<file>\\t<wnid>\\t...' (corrupt)")
        out.setdefault(parts[1].strip(), []).append(parts[0].strip())
    return {k: sorted(v) for k, v in out.items()}


def decode(path: Path, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3): RGB, box-downscaled when size < its side."""
    return read_image(path, "RGB", (size, size), Image.BOX, "tiny_imagenet", f"; download {SOURCE.url} again")


def tiny_imagenet(data_dir: str | None = None, download: bool = False, train_tasks: int | None = 40,
                  unseen_tasks: int | None = 10, classes_per_task: int = 4, grouping: str = "consecutive",
                  task_seed: int = 0, size: int = NATIVE, train_per_class: int | None = None,
                  normalize: bool = True, cache: bool = True) -> TaskSet:
    """Tiny ImageNet as tasks of wnid groups.

    Returns a TaskSet whose pool x is (N, 3, size, size) float32 (channel-normalized with the
    training set's constants, or only scaled to [0, 1]); size < 64 box-downscales (64 -> 32 averages
    2x2 blocks). train_per_class: keep only the first n training images of each class (sorted file
    names), for quick runs. y holds indices into wnids.txt. cache: keep the decoded images in the
    cache folder (common.cache_dir), keyed by every file's path, size and mtime and by ``size``, so
    the next run with the same images skips decoding.
    """
    if not 1 <= size <= NATIVE:
        raise ConfigError(f"dataset.size={size}: choose 1..{NATIVE} (64 is native; 32 halves each side)")
    if train_per_class is not None and train_per_class < 1:
        raise ConfigError(f"dataset.train_per_class={train_per_class} must be >= 1 or null")
    root = require("tiny_imagenet", dataset_dir(data_dir, FOLDER),
                   ["wnids.txt", "train", "val/images", "val/val_annotations.txt"], LAYOUT, SOURCE, download)
    wnids = read_wnids(root)
    groups = plan_groups(list(range(len(wnids))), classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed, name="tiny_imagenet")
    val = read_val_annotations(root)
    files, ys, split = [], [], []
    for c in sorted({c for g in groups for c in g}):
        w = wnids[c]
        folder = root / "train" / w / "images"
        train = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpeg", ".jpg")) if folder.is_dir() else []
        if not train:
            raise DataError(f"tiny_imagenet: {folder} has no JPEG images (partial copy? expected "
                            f"layout: {LAYOUT}); download {SOURCE.url} again")
        train = train[:train_per_class] if train_per_class else train
        tests = [root / "val" / "images" / f for f in val.get(w, [])]
        if not tests:
            raise DataError(f"tiny_imagenet: {root / 'val/val_annotations.txt'} lists no val image of "
                            f"{w} (partial copy?)")
        files += train + tests
        ys += [c] * (len(train) + len(tests))
        split += [True] * len(train) + [False] * len(tests)
    for f in files:
        if not f.is_file():
            raise DataError(f"tiny_imagenet: {f} is missing (listed in val_annotations.txt; partial copy?)")

    def decode_all() -> np.ndarray:  # (N, size, size, 3) uint8
        out = np.empty((len(files), size, size, 3), dtype=np.uint8)
        for i, f in enumerate(files):
            out[i] = decode(f, size)
        return out

    shape = (len(files), size, size, 3)
    x = cached_uint8("tiny_imagenet", files_key(files, size), shape, decode_all) if cache else decode_all()
    x = x.transpose(0, 3, 1, 2)
    x = channel_normalize(x, MEAN, STD) if normalize else channel_normalize(x, (0.0,) * 3, (1.0,) * 3)
    return build_taskset("tiny_imagenet", x, np.asarray(ys, dtype=np.int64), read_words(root, wnids),
                         classes_per_task=classes_per_task, grouping=grouping, train_tasks=train_tasks,
                         unseen_tasks=unseen_tasks, task_seed=task_seed, pool_split=np.asarray(split),
                         groups=groups)
