"""Datasets split into learning tasks (groups of classes).

Every loader is a function used as a Hydra ``_target_`` (conf/dataset/*.yaml) that returns a
TaskSet: one shared sample pool and per-task index tensors. See docs/data.md.
"""

from weightsim.data.common import LOCATION_KEYS, dataset_dir
from weightsim.data.tasks import Task, TaskSet, build_taskset, class_groups, plan_groups, task_counts

__all__ = ["LOCATION_KEYS", "Task", "TaskSet", "build_taskset", "class_groups", "dataset_dir", "plan_groups",
           "task_counts"]
