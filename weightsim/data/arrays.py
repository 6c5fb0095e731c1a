"""Your own arrays, no code needed: one ``.npz`` with ``x`` (N, ...) and ``y`` (N,).

Optional entries: ``x_test`` / ``y_test`` (then they are every task's test samples and x / y its
training samples, instead of a random split) and ``class_names`` (strings, one per distinct
label in sorted order). Loaded with ``allow_pickle=False``: object arrays are refused, so a file
from someone else cannot run code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from weightsim.data.tasks import TaskSet, build_taskset, plan_groups
from weightsim.errors import ConfigError, DataError

LAYOUT = "a .npz with x (N, ...) and y (N,), optional x_test, y_test, class_names"
NORMALIZE = ("global", "channel", "none")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz (no pickles)."""
    if not path.is_file():
        raise DataError(f"arrays: no file {path} (expected {LAYOUT}); set dataset.data_dir to your .npz")
    try:
        z = np.load(path, allow_pickle=False)
        if isinstance(z, np.lib.npyio.NpzFile):
            with z:
                return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"arrays: {path} is not a readable .npz ({e}): corrupt, truncated, or holds "
                        f"object arrays (refused)") from None
    # np.load gave one bare array: a .npy file (whatever its name), which has no labels
    raise DataError(f"arrays: {path} is a single array {tuple(z.shape)} (.npy), not {LAYOUT}: save "
                    f"inputs and labels together with np.savez('data.npz', x=x, y=y)")


def arrays(data_dir: str | None = None, download: bool = False, train_tasks: int | None = None,
           unseen_tasks: int | None = None, classes_per_task: int = 2, grouping: str = "consecutive",
           task_seed: int = 0, test_fraction: float = 0.25, normalize: str = "global",
           tokens: bool = False) -> TaskSet:
    """An .npz file (``data_dir`` is its path) as tasks of label groups.

    Returns a TaskSet whose pool x is (N, ...) float32, standardized with one mean and std
    ("global"), one per axis-1 channel ("channel", for (N, C, ...) images) or left as is ("none");
    statistics from the training arrays only. tokens=True keeps integer x as int64 codes for
    sequence nets (x (N, T), 0 = padding) and sets info {"vocab_size": max + 1, "max_len": T}.
    y holds indices into the sorted distinct labels.
    """
    if data_dir in (None, ""):
        raise ConfigError("dataset.data_dir is required for arrays: the path of your .npz file")
    if download:
        raise ConfigError("dataset.download=true: arrays reads your own .npz, nothing to download")
    if normalize not in NORMALIZE:
        raise ConfigError(f"dataset.normalize='{normalize}': choose from {', '.join(NORMALIZE)}")
    path = Path(data_dir).expanduser()
    z = read_npz(path)
    for key in ("x", "y"):
        if key not in z:
            raise DataError(f"arrays: {path} has no '{key}' array (it has {', '.join(sorted(z)) or 'none'}; "
                            f"expected {LAYOUT}): save it with the names x and y, np.savez('data.npz', x=x, y=y)")
    if ("x_test" in z) != ("y_test" in z):
        raise DataError(f"arrays: {path} has only one of x_test / y_test: give both or neither")
    xs, ys = [z["x"]], [z["y"]]
    if "x_test" in z:
        xs.append(z["x_test"]); ys.append(z["y_test"])
    for x, y, name in zip(xs, ys, ("x", "x_test")):
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"arrays: {path} {name} has {len(x)} rows but its labels have shape {y.shape}")
        if x.shape[1:] != xs[0].shape[1:]:
            raise DataError(f"arrays: {path} x_test rows are {x.shape[1:]}, x rows are {xs[0].shape[1:]}")
    labels, y = np.unique(np.concatenate(ys), return_inverse=True)
    y = y.reshape(-1).astype(np.int64)
    names = [str(v) for v in labels]
    if "class_names" in z:
        names = [str(v) for v in z["class_names"]]
        if len(names) != len(labels):
            raise DataError(f"arrays: {path} class_names has {len(names)} entries for {len(labels)} labels")
    pool_split = np.arange(len(y)) < len(xs[0]) if len(xs) == 2 else None
    x = np.concatenate(xs)
    info: dict = {}
    if tokens:
        if not np.issubdtype(x.dtype, np.integer) or x.ndim != 2 or (x.size and x.min() < 0):
            raise DataError(f"arrays: dataset.tokens=true needs non-negative integer x (N, T), "
                            f"{path} has {x.dtype} {x.shape}")
        t = torch.from_numpy(x.astype(np.int64))
        info = {"vocab_size": int(x.max()) + 1 if x.size else 1, "max_len": int(x.shape[1])}
    else:
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataError(f"arrays: {path} x has dtype {x.dtype}, expected numbers")
        t = torch.from_numpy(x.astype(np.float32))
        bad = ~torch.isfinite(t).flatten(1).all(dim=1) if t.dim() > 1 else ~torch.isfinite(t)
        if bad.any():  # one NaN would turn every normalized value into NaN and every net into a diverged one
            where = "x and x_test stacked" if pool_split is not None else "x"
            raise DataError(f"arrays: {path} has NaN or inf (or values beyond float32) in {int(bad.sum())} row(s), "
                            f"the first row {int(bad.nonzero()[0])} of {where}: drop or fill them")
        fit = t[torch.from_numpy(pool_split)] if pool_split is not None else t
        if normalize == "global":
            mean, std = fit.mean(), fit.std().clamp_min(1e-6)
            t = (t - mean) / std
            info = {"mean": float(mean), "std": float(std)}
        elif normalize == "channel":
            if t.dim() < 2:
                raise ConfigError("dataset.normalize=channel needs x with a channel axis (N, C, ...)")
            dims = [0] + list(range(2, t.dim()))
            shape = [1, -1] + [1] * (t.dim() - 2)
            mean, std = fit.mean(dim=dims), fit.std(dim=dims).clamp_min(1e-6)
            t = (t - mean.view(shape)) / std.view(shape)
            info = {"mean": mean.tolist(), "std": std.tolist()}
    groups = plan_groups(list(range(len(labels))), classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed, name="arrays")
    return build_taskset("arrays", t, y, names, classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed,
                         test_fraction=test_fraction, pool_split=pool_split, info=info, groups=groups)
