"""scikit-learn's digits (1 797 images of 8x8, 10 classes): the embedded default, no download."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from weightsim.data.tasks import TaskSet, build_taskset


def digits(train_tasks: int | None = 10, unseen_tasks: int | None = 5, classes_per_task: int = 2,
           grouping: str = "combinations", task_seed: int = 0, test_fraction: float = 0.25,
           image: bool = False) -> TaskSet:
    """Digits as tasks of class groups. x: (N, 64), or (N, 1, 8, 8) with image=True; pixels scaled
    to [0, 1] then standardized with the pool's mean and std (one scalar each)."""
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    x = (x - x.mean()) / x.std()
    if image:
        x = x.view(-1, 1, 8, 8)
    return build_taskset("digits", x, np.asarray(d.target), [str(c) for c in range(10)],
                         classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed,
                         test_fraction=test_fraction)
