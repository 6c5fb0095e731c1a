"""Learning tasks: groups of a dataset's classes, with a fixed, seed-independent sample split.

All tasks of a dataset index one shared sample pool ``x`` (N, *input_shape), so a population
trainer gathers each member's batch from it without copying the data per member or per task.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from weightsim.errors import ConfigError, DataError, warn

GROUPINGS = ("consecutive", "combinations")
MAX_DERIVED_TASKS = 50  # the paper's task count: derived counts never build a bigger zoo than that
MIN_UNSEEN = 3  # derived counts give retrieval at least 3 unseen tasks (chance 1/3), or none


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


def count_groups(n_classes: int, size: int, grouping: str) -> int:
    """How many tasks of ``size`` classes the grouping makes of ``n_classes`` classes."""
    if grouping not in GROUPINGS:
        raise ConfigError(f"unknown dataset.grouping '{grouping}': choose {' or '.join(GROUPINGS)}")
    return n_classes // size if grouping == "consecutive" else math.comb(n_classes, size)


def class_groups(classes: list[int], size: int, grouping: str, n_groups: int, seed: int) -> list[list[int]]:
    """Groups of ``size`` classes that define tasks.

    grouping="consecutive": classes (0..size-1), (size..2size-1), ... (the paper's CIFAR-100 /
    tiny ImageNet rule); "combinations": all ``size``-subsets in a fixed shuffled order (digits has
    only 10 classes, so its tasks are class pairs that may share a class).
    """
    available = count_groups(len(classes), size, grouping)
    if n_groups > available:
        raise ConfigError(f"{n_groups} tasks requested but the '{grouping}' grouping of {len(classes)} "
                          f"classes into groups of {size} gives only {available}: lower "
                          f"dataset.train_tasks + dataset.unseen_tasks, or set them to null to derive "
                          f"them from the data")
    if grouping == "consecutive":
        return [classes[i:i + size] for i in range(0, size * n_groups, size)]
    groups = [list(c) for c in itertools.combinations(classes, size)]
    order = np.random.default_rng(seed).permutation(len(groups))
    return [groups[i] for i in order[:n_groups]]


def task_counts(available: int, train_tasks: int | None, unseen_tasks: int | None) -> tuple[int, int]:
    """(train_tasks, unseen_tasks) with each null count derived from ``available``, the number of
    tasks the data's classes make.

    Both null: T = min(available, 50) tasks, of which U = max(3, T // 5) unseen (the paper's 40 + 10
    at T = 50) when T >= 5, else U = 0 (too few for retrieval beside 2 training tasks).
    Only unseen_tasks null: U = min(max(3, train_tasks // 4), available - train_tasks), 0 when that is
    under 3. Only train_tasks null: the rest of min(available, max(50, U + 2)) tasks. Given
    counts are returned as they are (checked later against ``available``).
    """
    if train_tasks is None and unseen_tasks is None:
        total = min(available, MAX_DERIVED_TASKS)
        unseen = max(MIN_UNSEEN, total // 5) if total >= 2 + MIN_UNSEEN else 0
        return total - unseen, unseen
    if unseen_tasks is None:
        unseen = min(max(MIN_UNSEEN, train_tasks // 4), available - train_tasks)
        return train_tasks, unseen if unseen >= MIN_UNSEEN else 0
    if train_tasks is None:
        train = min(available, max(MAX_DERIVED_TASKS, unseen_tasks + 2)) - unseen_tasks
        if train < 2:
            raise ConfigError(f"dataset.unseen_tasks={unseen_tasks} leaves {max(train, 0)} of the {available} "
                              f"tasks the data gives for training; the weight classifier needs 2: lower "
                              f"dataset.unseen_tasks")
        return train, unseen_tasks
    return train_tasks, unseen_tasks


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


def plan_groups(classes: list[int], *, classes_per_task: int, grouping: str, train_tasks: int | None,
                unseen_tasks: int | None, task_seed: int = 0, name: str = "dataset") -> list[list[int]]:
    """The class groups of the ``train_tasks`` + ``unseen_tasks`` tasks (train tasks first), checked.

    A null count is derived from how many tasks the classes make (``task_counts``); a derived
    count that skips retrieval or leaves classes out of every task is said in a warning.
    Loaders call it before decoding samples so that only the classes the tasks use are loaded
    (and converted to float); ``build_taskset(..., groups=...)`` then uses exactly these groups.
    """
    if classes_per_task < 2:
        raise ConfigError(f"dataset.classes_per_task={classes_per_task}: a task needs at least 2 classes")
    available = count_groups(len(classes), classes_per_task, grouping)
    what = (f"{len(classes)} classes in '{grouping}' groups of {classes_per_task} make {available} "
            f"task{'' if available == 1 else 's'}")
    given = {"train": train_tasks is not None, "unseen": unseen_tasks is not None}
    train_tasks, unseen_tasks = task_counts(available, train_tasks, unseen_tasks)
    if train_tasks < 2:
        if not given["train"]:
            raise ConfigError(f"{name}: {what}; the weight classifier needs at least 2: give more classes "
                              f"or a smaller dataset.classes_per_task")
        raise ConfigError(f"dataset.train_tasks={train_tasks}: the weight classifier needs at least 2 tasks")
    if unseen_tasks < 0:
        raise ConfigError(f"dataset.unseen_tasks={unseen_tasks} must be >= 0")
    groups = class_groups(sorted(classes), classes_per_task, grouping, train_tasks + unseen_tasks, task_seed)
    if not given["unseen"] and unseen_tasks == 0:
        warn(f"{name}: {what}; {train_tasks} for training leave {available - train_tasks} for retrieval, "
             f"which needs {MIN_UNSEEN} unseen tasks and is skipped: give more classes or a smaller "
             f"dataset.classes_per_task" + (" or train_tasks" if given["train"] else ""))
    unused = len(classes) - len({c for g in groups for c in g})
    if unused and not all(given.values()):  # leaving classes out is what given counts ask for
        cap = f" (at most {MAX_DERIVED_TASKS} tasks are derived)" if available > MAX_DERIVED_TASKS else ""
        warn(f"{name}: {what}; the derived {train_tasks} + {unseen_tasks} tasks use {len(classes) - unused} "
             f"classes and leave {unused} out{cap}: set dataset.classes_per_task, train_tasks or "
             f"unseen_tasks to use them")
    return groups


def build_taskset(name: str, x: torch.Tensor, y: np.ndarray, class_names: list[str], *,
                  classes_per_task: int, grouping: str, train_tasks: int | None, unseen_tasks: int | None,
                  task_seed: int = 0, test_fraction: float = 0.25,
                  pool_split: np.ndarray | None = None, info: dict | None = None,
                  groups: list[list[int]] | None = None) -> TaskSet:
    """Split a labelled pool into ``train_tasks`` + ``unseen_tasks`` tasks (train tasks first).

    x: (N, *input_shape); y: (N,) dataset class ids (indices into ``class_names``).
    groups: the tasks' class groups from ``plan_groups`` over the dataset's *full* class list
    (needed when the pool holds only the used classes, so that the grouping does not depend on
    which classes were loaded); default: planned over the classes present in y. Null counts are
    derived as in ``plan_groups`` (given groups: from their number, which gives the same counts).
    """
    if groups is None:
        classes = sorted(int(c) for c in np.unique(y))
        groups = plan_groups(classes, classes_per_task=classes_per_task, grouping=grouping,
                             train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed, name=name)
    train_tasks, unseen_tasks = task_counts(len(groups), train_tasks, unseen_tasks)
    if len(groups) != train_tasks + unseen_tasks:
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
