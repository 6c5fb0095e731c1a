"""Your own images, no code needed: ``root/<class>/*.png|jpg|jpeg|bmp|gif|webp``.

Classes are the sub-folders of ``root`` in sorted name order; tasks group them like any dataset
(consecutive by default). Each task's sample split is a fixed stratified random split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from weightsim.data.common import channel_normalize, read_image, require, stored_bands
from weightsim.data.tasks import TaskSet, build_taskset, plan_groups
from weightsim.errors import ConfigError, DataError, warn

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
LAYOUT = "root/<class>/<image>.png|jpg|jpeg|bmp|gif|webp, one sub-folder per class"
GRAY_BANDS = {"1", "L", "I", "F"}  # PIL bands of a one-channel file (bilevel, 8-bit, 32-bit int, float)
ALPHA_BANDS = {"A", "a"}
FIX = ": replace or remove it"


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


def image_folder(data_dir: str | None = None, download: bool = False, train_tasks: int | None = None,
                 unseen_tasks: int | None = None, classes_per_task: int = 2, grouping: str = "consecutive",
                 task_seed: int = 0, test_fraction: float = 0.25, channels: int | None = None,
                 size: list[int] | int | None = None, normalize: bool = True) -> TaskSet:
    """A folder of class sub-folders as tasks.

    Returns a TaskSet whose pool x is (N, channels, H, W) float32 in [0, 1], then (with normalize)
    standardized per channel with the mean and std of the loaded images. channels: 1 (grayscale),
    3 (RGB), or null: 1 when every file stores a grayscale image, else 3. Images whose stored
    channels differ from the ones used, or that lose an alpha channel, are counted in a warning.
    size: an int (square) or [H, W] to resize every image; null requires all images to share one
    size. y indexes the sorted class folder names. Null task counts are derived from the number of
    class folders (see ``tasks.task_counts``). ``download`` is accepted for a uniform interface;
    there is nothing to download.
    """
    if data_dir in (None, ""):
        raise ConfigError("dataset.data_dir is required for image_folder: the folder that holds one "
                          "sub-folder of images per class")
    if download:
        raise ConfigError("dataset.download=true: image_folder reads your own images, nothing to download")
    if channels not in (None, 1, 3):
        raise ConfigError(f"dataset.channels={channels}: choose 1 (grayscale), 3 (RGB) or null (detect)")
    hw = None if size is None else (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    root = require("image_folder", Path(data_dir).expanduser(), ["."], LAYOUT, None, False)
    names, files = list_classes(root)
    groups = plan_groups(list(range(len(names))), classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed, name="image_folder")
    used = sorted({c for g in groups for c in g})
    paths = [p for c in used for p in files[c]]
    ys = np.asarray([c for c in used for _ in files[c]], dtype=np.int64)
    channels = check_channels(paths, channels, root)
    mode = "RGB" if channels == 3 else "L"
    first = read_image(paths[0], mode, hw, Image.BILINEAR, "image_folder", FIX)
    x = np.empty((len(paths), *first.shape), dtype=np.uint8)
    for i, p in enumerate(paths):
        a = first if i == 0 else read_image(p, mode, hw, Image.BILINEAR, "image_folder", FIX)
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


def check_channels(paths: list[Path], channels: int | None, root: Path) -> int:
    """The channel count to read the images with (``channels``, or detected when None), from the
    files' headers; a warning for every kind of image that this changes (gray read as RGB, color
    reduced to gray, alpha dropped), with how many and one example."""
    bands = [set(stored_bands(p, "image_folder", FIX)) for p in paths]
    gray = [p for p, b in zip(paths, bands) if b - ALPHA_BANDS <= GRAY_BANDS]
    color = [p for p, b in zip(paths, bands) if not b - ALPHA_BANDS <= GRAY_BANDS]
    alpha = [p for p, b in zip(paths, bands) if b & ALPHA_BANDS]
    channels = channels or (1 if not color else 3)
    n, eg = len(paths), lambda ps: ps[0].relative_to(root)  # noqa: E731
    if channels == 3 and gray and not color:
        warn(f"image_folder: all {n} images are grayscale (e.g. {eg(gray)}) but dataset.channels=3 reads each "
             f"as 3 equal channels: set dataset.channels=1 (or null to detect it)")
    elif channels == 3 and gray:
        warn(f"image_folder: {len(gray)} of {n} images are grayscale (e.g. {eg(gray)}), the others color: the "
             f"gray ones are read as RGB, their gray value in all 3 channels (dataset.channels=1 would read "
             f"every image as grayscale)")
    if channels == 1 and color:
        warn(f"image_folder: {len(color)} of {n} images are color (e.g. {eg(color)}) but dataset.channels=1 "
             f"reduces them to gray (luminance): set dataset.channels=3 (or null to detect it) to keep the color")
    if alpha:
        warn(f"image_folder: {len(alpha)} of {n} images have an alpha channel (e.g. {eg(alpha)}); it is dropped "
             f"and transparent pixels keep whatever color they store: flatten them onto a background first")
    return channels
