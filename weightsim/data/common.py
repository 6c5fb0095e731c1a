"""What every dataset loader shares: where its folder is, and one clear error when it is not there."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from weightsim.data.download import Source, install
from weightsim.errors import DataError
from weightsim.files import atomic_write

# Dataset config keys that say where the data is or how to get it, not what it is: they are left
# out of a zoo's identity, so the same zoo can be extended from another machine or folder.
LOCATION_KEYS = ("data_dir", "download", "cache")
ENV_DATA = "WEIGHTSIM_DATA"
ENV_CACHE = "WEIGHTSIM_CACHE"


def dataset_dir(data_dir: str | os.PathLike | None, folder: str) -> Path:
    """The dataset's own folder: ``data_dir`` when given, else ``$WEIGHTSIM_DATA/<folder>``, else
    ``./data/<folder>`` (relative to the working directory)."""
    if data_dir not in (None, ""):
        return Path(data_dir).expanduser()
    root = os.environ.get(ENV_DATA)
    return (Path(root).expanduser() if root else Path("data")) / folder


def require(name: str, root: Path, required: list[str], layout: str, source: Source | None,
            download: bool) -> Path:
    """Return ``root`` once every path in ``required`` (relative to it; a glob matches one file) exists.

    Missing ones: with ``download`` and a ``source``, install the official archive first;
    otherwise one DataError that names the first missing path, the expected layout and where to
    get the data.
    """
    def missing() -> list[str]:
        return [r for r in required if not ((root / r).exists() if "*" not in r else any(root.glob(r)))]

    gone = missing()
    if gone and download and source is not None:
        install(source, root)
        gone = missing()
    if not gone:
        return root
    what = f"no folder {root}" if not root.exists() else f"{root} has no {gone[0]}"
    if source is not None:
        how = f"download {source.url} and unpack it there, or set dataset.download=true"
        if download:
            how = f"the archive from {source.url} did not provide it"
    else:
        how = "set dataset.data_dir to your folder"
    raise DataError(f"{name}: {what} (expected layout: {layout}); {how}")


UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)  # what PIL raises for a bad file


def read_image(path: Path, mode: str, size: tuple[int, int] | None, resample: int, dataset: str,
               fix: str = "") -> np.ndarray:
    """One image as uint8 (H, W, C) in PIL mode ``mode`` ("RGB" or "L"), resized with ``resample``
    to size=(H, W) (None: as it is). An unreadable file ends in one DataError naming it, then ``fix``."""
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), resample)
            a = np.asarray(im, dtype=np.uint8)
    except UNREADABLE as e:
        raise unreadable(dataset, path, e, fix) from None
    return a[:, :, None] if a.ndim == 2 else a


def stored_bands(path: Path, dataset: str, fix: str = "") -> tuple[str, ...]:
    """The bands the file stores, from its header only (no decoding): ("L",) for grayscale,
    ("R", "G", "B", "A") for RGBA, ("P",) for a palette, ... An unreadable file ends in one DataError."""
    try:
        with Image.open(path) as im:
            return im.getbands()
    except UNREADABLE as e:
        raise unreadable(dataset, path, e, fix) from None


def unreadable(dataset: str, path: Path, e: Exception, fix: str) -> DataError:
    return DataError(f"{dataset}: image {path} is unreadable ({e}): corrupt or truncated{fix}")


def channel_normalize(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float32 (N, C, H, W): scaled to [0, 1], then (v - mean_c) / std_c.

    One float copy (N·C·H·W·4 bytes), normalized in place.
    """
    t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return t.sub_(m).div_(s)


def used_mask(y: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """(N,) bool: the samples whose class belongs to one of the task groups."""
    return np.isin(y, sorted({c for g in groups for c in g}))


def cache_dir() -> Path:
    """Where decoded datasets are cached: ``$WEIGHTSIM_CACHE``, else ``$XDG_CACHE_HOME/weightsim``,
    else ``~/.cache/weightsim``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "weightsim"


def files_key(files: list[Path], *extra: object) -> str:
    """A key that changes when any file's path, size or modification time does, or ``extra`` does."""
    h = hashlib.sha256(repr(extra).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def cached_uint8(name: str, key: str, shape: tuple[int, ...], build: Callable[[], np.ndarray]) -> np.ndarray:
    """``build()`` (a uint8 array of ``shape``) once per key; later calls read it back from
    ``<cache_dir>/<name>-<key>.npy`` (numpy's format, read without pickle). A cache file that is
    unreadable or of another shape is rebuilt; a cache that cannot be written only costs the
    rebuild next time."""
    path = cache_dir() / f"{name}-{key}.npy"
    if path.is_file():
        try:
            x = np.load(path, allow_pickle=False)
            if x.shape == tuple(shape) and x.dtype == np.uint8:
                return x
        except (OSError, ValueError, EOFError):
            pass
    x = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.save(f, x, allow_pickle=False))
    except OSError:
        pass
    return x
