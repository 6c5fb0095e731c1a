"""Your own images, no code needed: ``root/<class>/*.png|jpg|jpeg|bmp|gif|webp``.

Classes are the sub-folders of ``root`` in sorted name order; tasks group them like any dataset
(consecutive by default). Each task's sample split is a fixed stratified random split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from weightsim.data.common import channel_normalize, read_image, require
from weightsim.data.tasks import TaskSet, build_taskset, plan_groups
from weightsim.errors import ConfigError, DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
LAYOUT = "root/<class>/<image>.png|jpg|jpeg|bmp|gif|webp, one sub-folder per class"


def list_classes(root: Path) -> tuple[list[str], list[list[Path]]]:
    """(class names, [sorted image paths of each class]); empty class folders are an error."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"image_folder: {root} has {len(classes)} class folder(s), at least 2 needed "
                        f"(expected layout: {LAYOUT})")
    files = []
    for c in classes:
        fs = sorted(p for p in (root / c).iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
        if not fs:
            raise DataError(f"image_folder: class folder {root / c} has no images ({', '.join(EXTENSIONS)})")
        files.append(fs)
    return classes, files


def image_folder(data_dir: str | None = None, download: bool = False, train_tasks: int = 2,
                 unseen_tasks: int = 0, classes_per_task: int = 2, grouping: str = "consecutive",
                 task_seed: int = 0, test_fraction: float = 0.25, channels: int = 3,
                 size: list[int] | int | None = None, normalize: bool = True) -> TaskSet:
    """A folder of class sub-folders as tasks.

    Returns a TaskSet whose pool x is (N, channels, H, W) float32 in [0, 1], then (with normalize)
    standardized per channel with the mean and std of the loaded images. size: an int (square) or
    [H, W] to resize every image; null requires all images to share one size. y indexes the
    sorted class folder names. ``download`` is accepted for a uniform interface; there is nothing
    to download.
    """
    if data_dir in (None, ""):
        raise ConfigError("dataset.data_dir is required for image_folder: the folder that holds one "
                          "sub-folder of images per class")
    if download:
        raise ConfigError("dataset.download=true: image_folder reads your own images, nothing to download")
    if channels not in (1, 3):
        raise ConfigError(f"dataset.channels={channels}: choose 1 (grayscale) or 3 (RGB)")
    hw = None if size is None else (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    root = require("image_folder", Path(data_dir).expanduser(), ["."], LAYOUT, None, False)
    names, files = list_classes(root)
    groups = plan_groups(list(range(len(names))), classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed)
    used = sorted({c for g in groups for c in g})
    paths = [p for c in used for p in files[c]]
    ys = np.asarray([c for c in used for _ in files[c]], dtype=np.int64)
    mode = "RGB" if channels == 3 else "L"
    first = read_image(paths[0], mode, hw, Image.BILINEAR, "image_folder")
    x = np.empty((len(paths), *first.shape), dtype=np.uint8)
    for i, p in enumerate(paths):
        a = first if i == 0 else read_image(p, mode, hw, Image.BILINEAR, "image_folder")
        if a.shape != first.shape:
            raise DataError(f"image_folder: {p} is {a.shape[1]}x{a.shape[0]} but {paths[0]} is "
                            f"{first.shape[1]}x{first.shape[0]}: set dataset.size to resize them all")
        x[i] = a
    x = x.transpose(0, 3, 1, 2)
    if normalize:
        v = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
        mean = tuple(float(m) for m in v.mean(dim=(0, 2, 3)))
        std = tuple(max(float(s), 1e-6) for s in v.std(dim=(0, 2, 3)))
        del v
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    return build_taskset("image_folder", channel_normalize(x, mean, std), ys, names,
                         classes_per_task=classes_per_task, grouping=grouping, train_tasks=train_tasks,
                         unseen_tasks=unseen_tasks, task_seed=task_seed, test_fraction=test_fraction,
                         info={"mean": list(mean), "std": list(std)}, groups=groups)
