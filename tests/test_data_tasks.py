"""Task construction shared by every loader: planned groups, empty splits, the data fingerprint."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from weightsim.data.common import LOCATION_KEYS, dataset_dir
from weightsim.data.tasks import build_taskset, plan_groups, task_counts
from weightsim.errors import ConfigError, DataError, WeightsimWarning


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


@pytest.mark.parametrize("available,train,unseen,expect", [
    (2, None, None, (2, 0)), (4, None, None, (4, 0)),  # too few tasks for 2 training + 3 unseen
    (5, None, None, (2, 3)), (10, None, None, (7, 3)), (20, None, None, (16, 4)),
    (50, None, None, (40, 10)), (4950, None, None, (40, 10)),  # the paper's 40 + 10, never more
    (10, 4, None, (4, 3)), (10, 6, None, (6, 3)), (40, 20, None, (20, 5)), (10, 8, None, (8, 0)),  # 2 left: too few, none
    (10, None, 4, (6, 4)), (60, None, 0, (50, 0)), (10, 3, 1, (3, 1)),  # given counts stay
])
def test_null_task_counts_are_derived_from_the_data(available, train, unseen, expect):
    assert task_counts(available, train, unseen) == expect


def test_derived_counts_build_the_same_tasks_from_planned_groups():
    """build_taskset rederives null counts from the planned groups' number: the same roles."""
    x, y, names = pool(classes=12)
    for train, unseen in ((None, None), (3, None), (None, 2)):
        kw = dict(classes_per_task=2, grouping="consecutive", train_tasks=train, unseen_tasks=unseen)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", WeightsimWarning)
            groups = plan_groups(list(range(12)), **kw)
            ts = build_taskset("t", x, y, names, groups=groups, **kw)
        expect = task_counts(6, train, unseen)
        assert [t.role for t in ts.tasks] == ["train"] * expect[0] + ["unseen"] * expect[1]


def test_derived_counts_that_skip_retrieval_or_leave_classes_out_warn():
    with pytest.warns(WeightsimWarning) as caught:
        assert len(plan_groups(list(range(9)), classes_per_task=2, grouping="consecutive", train_tasks=None,
                               unseen_tasks=None, name="mine")) == 4
    messages = [str(w.message) for w in caught]
    assert messages == [
        "mine: 9 classes in 'consecutive' groups of 2 make 4 tasks; 4 for training leave 0 for retrieval, which "
        "needs 3 unseen tasks and is skipped: give more classes or a smaller dataset.classes_per_task",
        "mine: 9 classes in 'consecutive' groups of 2 make 4 tasks; the derived 4 + 0 tasks use 8 classes and "
        "leave 1 out: set dataset.classes_per_task, train_tasks or unseen_tasks to use them"]
    with pytest.warns(WeightsimWarning, match=r"the derived 40 \+ 10 tasks use 100 classes and leave 100 out "
                                             r"\(at most 50 tasks are derived\)"):
        plan_groups(list(range(200)), classes_per_task=2, grouping="consecutive", train_tasks=None, unseen_tasks=None)
    with pytest.warns(WeightsimWarning) as caught:
        plan_groups(list(range(20)), classes_per_task=2, grouping="consecutive", train_tasks=8, unseen_tasks=None)
    assert [str(w.message).split("; ", 1)[1] for w in caught] == [
        "8 for training leave 2 for retrieval, which needs 3 unseen tasks and is skipped: give more classes or a "
        "smaller dataset.classes_per_task or train_tasks",
        "the derived 8 + 0 tasks use 16 classes and leave 4 out: set dataset.classes_per_task, train_tasks or "
        "unseen_tasks to use them"]
    with warnings.catch_warnings():  # given counts say nothing: leaving classes out is what they ask for
        warnings.simplefilter("error", WeightsimWarning)
        plan_groups(list(range(9)), classes_per_task=2, grouping="consecutive", train_tasks=2, unseen_tasks=0)
        plan_groups(list(range(10)), classes_per_task=2, grouping="consecutive", train_tasks=None, unseen_tasks=None)


def test_counts_the_data_cannot_give_are_errors():
    with pytest.raises(ConfigError, match=r"7 tasks requested but the 'consecutive' grouping of 10 classes into "
                                          r"groups of 2 gives only 5: lower dataset.train_tasks \+ "
                                          r"dataset.unseen_tasks, or set them to null"):
        plan_groups(list(range(10)), classes_per_task=2, grouping="consecutive", train_tasks=4, unseen_tasks=3)
    with pytest.raises(ConfigError, match=r"mine: 3 classes in 'consecutive' groups of 2 make 1 task; the weight "
                                          r"classifier needs at least 2: give more classes"):
        plan_groups(list(range(3)), classes_per_task=2, grouping="consecutive", train_tasks=None, unseen_tasks=None,
                    name="mine")
    with pytest.raises(ConfigError, match=r"dataset.unseen_tasks=4 leaves 1 of the 5 tasks the data gives for "
                                          r"training; the weight classifier needs 2"):
        plan_groups(list(range(10)), classes_per_task=2, grouping="consecutive", train_tasks=None, unseen_tasks=4)
