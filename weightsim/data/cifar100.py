"""CIFAR-100 from the official python pickles (``cifar-100-python/{train,test,meta}``).

Tasks (paper default): fine classes 2i and 2i+1 form task i (50 tasks of 2 classes). The
dataset's own train/test split is each task's sample split. Only the classes the tasks use are
converted to float.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from weightsim.data.common import channel_normalize, dataset_dir, require, used_mask
from weightsim.data.download import Source
from weightsim.data.tasks import TaskSet, build_taskset, plan_groups
from weightsim.errors import ConfigError, DataError

FOLDER = "cifar-100-python"
SOURCE = Source("cifar100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                md5="eb9058c3a382ffc7106e4002c42a8d85", member=FOLDER)
LAYOUT = f"{FOLDER}/ with the python pickles train, test, meta"
# per-channel mean and std of the 50 000 training images (pixels in [0, 1]); fixed constants, so a
# partial copy is normalized exactly as the full one
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)

# what a CIFAR pickle may reference: numpy arrays and the latin1 codec of protocol-2 bytes.
# Anything else (a pickle can name any callable) is refused, so a foreign file cannot run code.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """A CIFAR python pickle as a dict with str keys (loaded like ``encoding="latin1"``)."""
    try:
        obj = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"cifar100: {path} is corrupt or not a CIFAR pickle ({e}); "
                        f"download {SOURCE.url} again") from None
    if not isinstance(obj, dict):
        raise DataError(f"cifar100: {path} holds a {type(obj).__name__}, not a CIFAR dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, fine labels (N,) int64) of the ``train`` or ``test`` pickle."""
    d = read_pickle(path)
    for key in ("data", "fine_labels"):
        if key not in d:
            raise DataError(f"cifar100: {path} has no '{key}' entry: not a CIFAR-100 pickle")
    data = np.asarray(d["data"])
    labels = np.asarray(d["fine_labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"cifar100: {path} 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if len(labels) != len(data):
        raise DataError(f"cifar100: {path} has {len(data)} images but {len(labels)} labels (truncated?)")
    if len(labels) and (labels.min() < 0 or labels.max() > 99):
        raise DataError(f"cifar100: {path} has fine labels outside 0..99")
    return data.reshape(-1, 3, 32, 32), labels


def read_class_names(path: Path) -> list[str]:
    """The 100 fine class names of the ``meta`` pickle, in label order."""
    names = read_pickle(path).get("fine_label_names")
    if names is None or len(names) != 100:
        raise DataError(f"cifar100: {path} has no list of 100 'fine_label_names'")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def cifar100(data_dir: str | None = None, download: bool = False, train_tasks: int | None = 40,
             unseen_tasks: int | None = 10, classes_per_task: int = 2, grouping: str = "consecutive",
             task_seed: int = 0, size: int = 32, normalize: bool = True) -> TaskSet:
    """CIFAR-100 as tasks of fine-class groups.

    Returns a TaskSet whose pool x is (N, 3, 32, 32) float32 (channel-normalized with the training
    set's constants, or only scaled to [0, 1] with normalize=False), N = the train + test images of
    the classes the tasks use; y holds fine labels 0..99. size < 32 area-downscales (16: 2x2
    averages), for nets whose chain Grams of 3 x 32 x 32 inputs would not fit.
    """
    if not 1 <= size <= 32:
        raise ConfigError(f"dataset.size={size}: choose 1..32 (32 is native; 16 halves each side)")
    root = require("cifar100", dataset_dir(data_dir, FOLDER), ["train", "test", "meta"], LAYOUT,
                   SOURCE, download)
    names = read_class_names(root / "meta")
    groups = plan_groups(list(range(100)), classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed, name="cifar100")
    xs, ys, split = [], [], []
    for part in ("train", "test"):
        x, y = read_split(root / part)
        keep = used_mask(y, groups)
        xs.append(x[keep]); ys.append(y[keep]); split.append(np.full(int(keep.sum()), part == "train"))
    x = np.concatenate(xs)
    x = channel_normalize(x, MEAN, STD) if normalize else channel_normalize(x, (0.0,) * 3, (1.0,) * 3)
    if size != 32:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return build_taskset("cifar100", x, np.concatenate(ys), names, classes_per_task=classes_per_task,
                         grouping=grouping, train_tasks=train_tasks, unseen_tasks=unseen_tasks,
                         task_seed=task_seed, pool_split=np.concatenate(split), groups=groups)
