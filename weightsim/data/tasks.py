"""Learning tasks: groups of a dataset's classes, with a fixed, seed-independent sample split.

All tasks of a dataset index one shared sample pool ``x`` (N, *input_shape), so a population
trainer gathers each member's batch from it without copying the data per member or per task.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from weightsim.errors import ConfigError, DataError


@dataclass
class Task:
    """One learning task. Indices point into the owning TaskSet's pool; labels are local (0..k-1)."""

    id: int
    classes: list[int]  # the dataset's class ids, in local-label order
    class_names: list[str]
    role: str  # "train" (seen by the weight classifier) or "unseen" (retrieval only)
    train_idx: torch.Tensor  # (n_train,) int64 into TaskSet.x
    train_y: torch.Tensor  # (n_train,) int64 local labels
    test_idx: torch.Tensor  # (n_test,)
    test_y: torch.Tensor  # (n_test,)

    def meta(self) -> dict:
        return {"id": self.id, "classes": self.classes, "class_names": self.class_names,
                "role": self.role, "n_train": len(self.train_idx), "n_test": len(self.test_idx)}


@dataclass
class TaskSet:
    """A dataset's sample pool and its tasks.

    x: (N, *input_shape) float32, already normalized; y: (N,) dataset class ids.
    x is a float tensor for images/vectors, or an int64 tensor of character codes for sequences.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    tasks: list[Task]
    input_shape: tuple[int, ...]
    classes_per_task: int
    info: dict = field(default_factory=dict)  # e.g. {"vocab_size": 59, "max_len": 20}: fills null arch options

    def by_role(self, role: str) -> list[Task]:
        return [t for t in self.tasks if t.role == role]

    def fingerprint(self) -> str:
        """A short hash of what the tasks are made of (input shape, each task's classes, class names
        and sample counts), independent of where the data lies: two folders that give the same
        fingerprint give the same tasks (a partial copy and the full dataset do not)."""
        desc = {"name": self.name, "input_shape": list(self.input_shape),
                "tasks": [t.meta() for t in self.tasks]}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def class_groups(classes: list[int], size: int, grouping: str, n_groups: int, seed: int) -> list[list[int]]:
    """Groups of ``size`` classes that define tasks.

    grouping="consecutive": classes (0..size-1), (size..2size-1), ... (the paper's CIFAR-100 /
    tiny ImageNet rule); "combinations": all ``size``-subsets in a fixed shuffled order (digits has
    only 10 classes, so its tasks are class pairs that may share a class).
    """
    if grouping == "consecutive":
        groups = [classes[i:i + size] for i in range(0, len(classes) - size + 1, size)]
    elif grouping == "combinations":
        groups = [list(c) for c in itertools.combinations(classes, size)]
        order = np.random.default_rng(seed).permutation(len(groups))
        groups = [groups[i] for i in order]
    else:
        raise ConfigError(f"unknown dataset.grouping '{grouping}': choose consecutive or combinations")
    if n_groups > len(groups):
        raise ConfigError(f"{n_groups} tasks requested but the '{grouping}' grouping of {len(classes)} "
                          f"classes into groups of {size} gives only {len(groups)}: lower "
                          f"dataset.train_tasks + dataset.unseen_tasks")
    return groups[:n_groups]


def split_task_samples(y: np.ndarray, classes: list[int], test_fraction: float, seed: int,
                       pool_split: np.ndarray | None = None):
    """Fixed per-task split: stratified by class, driven by ``seed`` only (never by a net's seed).

    pool_split: optional (N,) bool array, True for samples of the dataset's own train split;
    when given, the dataset's split is used instead of a random one.
    Returns (train_idx, train_y, test_idx, test_y) as int64 tensors.
    """
    rng = np.random.default_rng(seed)
    tr_i, tr_y, te_i, te_y = [], [], [], []
    for local, c in enumerate(classes):
        idx = np.flatnonzero(y == c)
        if pool_split is not None:
            tr, te = idx[pool_split[idx]], idx[~pool_split[idx]]
        else:
            idx = rng.permutation(idx)
            n_test = max(1, int(round(test_fraction * len(idx))))
            te, tr = idx[:n_test], idx[n_test:]
        tr_i.append(tr); tr_y.append(np.full(len(tr), local))
        te_i.append(te); te_y.append(np.full(len(te), local))
    cat = lambda parts: torch.as_tensor(np.concatenate(parts), dtype=torch.int64)  # noqa: E731
    return cat(tr_i), cat(tr_y), cat(te_i), cat(te_y)


def plan_groups(classes: list[int], *, classes_per_task: int, grouping: str, train_tasks: int,
                unseen_tasks: int, task_seed: int = 0) -> list[list[int]]:
    """The class groups of the ``train_tasks`` + ``unseen_tasks`` tasks (train tasks first), checked.

    Loaders call it before decoding samples so that only the classes the tasks use are loaded
    (and converted to float); ``build_taskset(..., groups=...)`` then uses exactly these groups.
    """
    if train_tasks < 2:
        raise ConfigError(f"dataset.train_tasks={train_tasks}: the weight classifier needs at least 2 tasks")
    if unseen_tasks < 0:
        raise ConfigError(f"dataset.unseen_tasks={unseen_tasks} must be >= 0")
    if classes_per_task < 2:
        raise ConfigError(f"dataset.classes_per_task={classes_per_task}: a task needs at least 2 classes")
    return class_groups(sorted(classes), classes_per_task, grouping, train_tasks + unseen_tasks, task_seed)


def build_taskset(name: str, x: torch.Tensor, y: np.ndarray, class_names: list[str], *,
                  classes_per_task: int, grouping: str, train_tasks: int, unseen_tasks: int,
                  task_seed: int = 0, test_fraction: float = 0.25,
                  pool_split: np.ndarray | None = None, info: dict | None = None,
                  groups: list[list[int]] | None = None) -> TaskSet:
    """Split a labelled pool into ``train_tasks`` + ``unseen_tasks`` tasks (train tasks first).

    x: (N, *input_shape); y: (N,) dataset class ids (indices into ``class_names``).
    groups: the tasks' class groups from ``plan_groups`` over the dataset's *full* class list
    (needed when the pool holds only the used classes, so that the grouping does not depend on
    which classes were loaded); default: planned over the classes present in y.
    """
    if groups is None:
        classes = sorted(int(c) for c in np.unique(y))
        groups = plan_groups(classes, classes_per_task=classes_per_task, grouping=grouping,
                             train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed)
    elif len(groups) != train_tasks + unseen_tasks:
        raise ConfigError(f"{len(groups)} class groups given for {train_tasks} + {unseen_tasks} tasks")
    tasks = []
    for i, g in enumerate(groups):
        parts = split_task_samples(y, g, test_fraction, task_seed + 1000 + i, pool_split)
        for split, labels in (("train", parts[1]), ("test", parts[3])):
            counts = torch.bincount(labels, minlength=len(g))
            if (counts == 0).any():
                c = g[int((counts == 0).nonzero()[0])]
                raise DataError(f"{name}: class {class_names[c]!r} (id {c}) of task {i} has no {split} "
                                f"samples: the data is partial, or choose other tasks")
        tasks.append(Task(i, g, [class_names[c] for c in g], "train" if i < train_tasks else "unseen", *parts))
    return TaskSet(name, x, torch.as_tensor(y, dtype=torch.int64), tasks, tuple(x.shape[1:]),
                   classes_per_task, info or {})
