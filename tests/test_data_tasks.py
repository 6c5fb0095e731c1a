"""Task construction shared by every loader: planned groups, empty splits, the data fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightsim.data.common import LOCATION_KEYS, dataset_dir
from weightsim.data.tasks import build_taskset, plan_groups
from weightsim.errors import ConfigError, DataError


def pool(n_per_class: int = 4, classes: int = 6):
    y = np.repeat(np.arange(classes), n_per_class)
    return torch.arange(len(y), dtype=torch.float32)[:, None], y, [f"c{i}" for i in range(classes)]


def test_plan_groups_consecutive_and_checks():
    assert plan_groups(list(range(8)), classes_per_task=2, grouping="consecutive", train_tasks=3,
                       unseen_tasks=1) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ConfigError, match="at least 2 tasks"):
        plan_groups(list(range(8)), classes_per_task=2, grouping="consecutive", train_tasks=1, unseen_tasks=0)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        plan_groups(list(range(8)), classes_per_task=1, grouping="consecutive", train_tasks=2, unseen_tasks=0)


def test_groups_over_the_full_class_list_with_a_subset_pool():
    """A pool holding only the used classes gives the same tasks as the full pool."""
    x, y, names = pool(classes=10)
    groups = plan_groups(list(range(10)), classes_per_task=2, grouping="combinations", train_tasks=2,
                         unseen_tasks=1, task_seed=5)
    full = build_taskset("t", x, y, names, classes_per_task=2, grouping="combinations", train_tasks=2,
                         unseen_tasks=1, task_seed=5)
    keep = np.isin(y, [c for g in groups for c in g])
    sub = build_taskset("t", x[torch.from_numpy(keep)], y[keep], names, classes_per_task=2,
                        grouping="combinations", train_tasks=2, unseen_tasks=1, task_seed=5, groups=groups)
    assert [t.classes for t in full.tasks] == [t.classes for t in sub.tasks] == groups
    for a, b in zip(full.tasks, sub.tasks):  # the same samples, addressed in the smaller pool
        assert torch.equal(full.x[a.train_idx], sub.x[b.train_idx]) and torch.equal(a.train_y, b.train_y)
    with pytest.raises(ConfigError, match="3 class groups given for 2 \\+ 2 tasks"):
        build_taskset("t", x, y, names, classes_per_task=2, grouping="consecutive", train_tasks=2,
                      unseen_tasks=2, groups=groups)


def test_a_class_without_samples_in_a_split_is_an_error():
    x, y, names = pool()
    split = np.ones(len(y), dtype=bool)
    split[y != 3] = np.arange((y != 3).sum()) % 2 == 0  # class 3: train only
    with pytest.raises(DataError, match=r"class 'c3' \(id 3\) of task 1 has no test samples"):
        build_taskset("t", x, y, names, classes_per_task=2, grouping="consecutive", train_tasks=3,
                      unseen_tasks=0, pool_split=split)


def test_fingerprint_follows_the_tasks_not_the_location():
    x, y, names = pool()
    kw = dict(classes_per_task=2, grouping="consecutive", train_tasks=3, unseen_tasks=0)
    a = build_taskset("t", x, y, names, **kw)
    assert a.fingerprint() == build_taskset("t", x + 1, y, names, **kw).fingerprint()
    fewer = np.concatenate([np.arange(len(y))[y != 0], np.flatnonzero(y == 0)[:3]])
    assert build_taskset("t", x[fewer], y[fewer], names, **kw).fingerprint() != a.fingerprint()  # partial copy
    assert build_taskset("t", x, y, names[::-1], **kw).fingerprint() != a.fingerprint()


def test_dataset_dir(monkeypatch, tmp_path):
    assert "data_dir" in LOCATION_KEYS and "download" in LOCATION_KEYS
    assert dataset_dir(str(tmp_path), "names") == tmp_path
    monkeypatch.setenv("WEIGHTSIM_DATA", str(tmp_path))
    assert dataset_dir(None, "names") == tmp_path / "names"
    monkeypatch.delenv("WEIGHTSIM_DATA")
    assert str(dataset_dir(None, "names")) == "data/names"
