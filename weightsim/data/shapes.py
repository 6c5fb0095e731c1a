"""The sizes of a dataset's tasks without reading its files: what ``weightsim-plan`` needs.

``data_shape(dataset_cfg)`` gives the input shape and dtype, the pool size and every task's training
and test sample counts that the dataset's loader would give for the same config, from the known sizes
of the official datasets (tiny ImageNet: 200 classes of 500 training and 50 validation images;
CIFAR-100: 100 classes of 500 + 100; NameData: the 18 language files' name counts). digits is
embedded and simply loaded; a dataset of your own files (arrays, image_folder) is loaded from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from hydra.utils import instantiate

from weightsim.data.tasks import TaskSet, plan_groups

# names per language file of the official NameData (sorted file order; the tutorial's data.zip)
NAMEDATA_COUNTS = {"Arabic": 2000, "Chinese": 268, "Czech": 519, "Dutch": 297, "English": 3668, "French": 277,
                   "German": 724, "Greek": 203, "Irish": 232, "Italian": 709, "Japanese": 991, "Korean": 94,
                   "Polish": 139, "Portuguese": 74, "Russian": 9408, "Scottish": 100, "Spanish": 298,
                   "Vietnamese": 73}
NAMEDATA_MAX_LEN = 20  # the longest name of the official files
NAMEDATA_VOCAB = 59


@dataclass
class DataShape:
    """A dataset's tasks by size only: pool x (pool, *input_shape) of ``dtype``; per task its
    training and test sample counts; ``info`` as in TaskSet.info (fills null arch options)."""

    name: str
    input_shape: tuple[int, ...]
    dtype: torch.dtype
    classes_per_task: int
    pool: int
    train: list[int]
    test: list[int]
    info: dict = field(default_factory=dict)

    @property
    def x_bytes(self) -> int:
        """Bytes of the pool x (what a population holds on its device)."""
        return self.pool * math.prod(self.input_shape) * torch.empty((), dtype=self.dtype).element_size()

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """n synthetic inputs (n, *input_shape) of this dtype: normal floats, or codes 1..vocab-1."""
        g = torch.Generator().manual_seed(seed)
        if self.dtype.is_floating_point:
            return torch.randn((n, *self.input_shape), generator=g, dtype=self.dtype)
        return torch.randint(1, int(self.info.get("vocab_size", 2)), (n, *self.input_shape), generator=g)


def _per_class(name: str, counts: list[tuple[int, int]], groups: list[list[int]], input_shape, dtype,
               classes_per_task: int, info: dict | None = None) -> DataShape:
    """counts[c] = (training, test) samples of class c; the pool holds the used classes' samples."""
    used = sorted({c for g in groups for c in g})
    return DataShape(name, tuple(input_shape), dtype, classes_per_task, sum(sum(counts[c]) for c in used),
                     [sum(counts[c][0] for c in g) for g in groups], [sum(counts[c][1] for c in g) for g in groups],
                     info or {})


def tiny_imagenet_shape(train_tasks=40, unseen_tasks=10, classes_per_task=4, grouping="consecutive", task_seed=0,
                        size=64, train_per_class=None, **_) -> DataShape:
    groups = plan_groups(list(range(200)), classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed, name="tiny_imagenet")
    per = (min(500, train_per_class or 500), 50)
    return _per_class("tiny_imagenet", [per] * 200, groups, (3, size, size), torch.float32, classes_per_task)


def cifar100_shape(train_tasks=40, unseen_tasks=10, classes_per_task=2, grouping="consecutive", task_seed=0,
                   size=32, **_) -> DataShape:
    groups = plan_groups(list(range(100)), classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed, name="cifar100")
    return _per_class("cifar100", [(500, 100)] * 100, groups, (3, size, size), torch.float32, classes_per_task)


def namedata_shape(train_tasks=6, unseen_tasks=3, classes_per_task=2, grouping="consecutive", task_seed=0,
                   test_fraction=0.25, max_len=None, unique=False, **_) -> DataShape | None:
    if unique:  # how many names repeat is only known from the files: load them
        return None
    n = list(NAMEDATA_COUNTS.values())
    groups = plan_groups(list(range(len(n))), classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed, name="namedata")
    test = [max(1, int(round(test_fraction * k))) for k in n]  # as tasks.split_task_samples
    t = max_len or NAMEDATA_MAX_LEN
    return _per_class("namedata", [(k - m, m) for k, m in zip(n, test)], groups, (t,), torch.int64,
                      classes_per_task, {"vocab_size": NAMEDATA_VOCAB, "max_len": t})


SHAPES = {"weightsim.data.tiny_imagenet.tiny_imagenet": tiny_imagenet_shape,
          "weightsim.data.cifar100.cifar100": cifar100_shape,
          "weightsim.data.namedata.namedata": namedata_shape}


def shape_of(taskset: TaskSet) -> DataShape:
    """The DataShape of a loaded TaskSet."""
    return DataShape(taskset.name, tuple(taskset.input_shape), taskset.x.dtype, taskset.classes_per_task,
                     len(taskset.x), [len(t.train_idx) for t in taskset.tasks],
                     [len(t.test_idx) for t in taskset.tasks], dict(taskset.info))


def data_shape(dataset_cfg: dict) -> tuple[DataShape, bool]:
    """(shape, known): the dataset config's task sizes from the known dataset sizes (known=True, no
    file read), or from loading the data (digits, your own files; known=False)."""
    cfg = dict(dataset_cfg)
    known = SHAPES.get(cfg.get("_target_", ""))
    shape = known(**{k: v for k, v in cfg.items() if k != "_target_"}) if known else None
    if shape is not None:
        return shape, True
    return shape_of(instantiate(cfg)), False

