"""Datasets split into learning tasks (groups of classes)."""

from weightsim.data.tasks import Task, TaskSet, class_groups

__all__ = ["Task", "TaskSet", "class_groups"]
