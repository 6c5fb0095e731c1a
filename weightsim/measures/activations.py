"""The activation measures' probe batch (``probe_inputs``); the activations themselves stream
through the zoo view (``Zoo.activations``, weightsim/zoo/activations.py), re-exported here."""

from __future__ import annotations

import torch
from torch import Tensor

from weightsim.errors import ConfigError, warn
from weightsim.zoo.activations import (LOGITS, WHERE, as_samples, iter_activations, layer_names,  # noqa: F401
                                       zoo_activations)
from weightsim.zoo.view import Zoo


def probe_inputs(zoo: Zoo, n: int, seed: int = 0, data_dir: str | None = None, key: str = "measure.cka") -> Tensor:
    """A fixed probe batch of ``n`` inputs shared by every net: the test inputs of all the zoo's tasks
    (each sample once), in a seeded random order, first n; (n, *input_shape). The same for every
    call with the same zoo dataset, n and seed (``key``: the settings its messages name)."""
    taskset = zoo.taskset(data_dir)
    idx = torch.unique(torch.cat([t.test_idx for t in taskset.tasks]))
    if n < 2:
        raise ConfigError(f"{key}.probe={n} must be >= 2 inputs")
    if n > len(idx):
        warn(f"{key}.probe={n} but the tasks of zoo {zoo.root} have {len(idx)} test inputs: the probe is those "
             f"{len(idx)}; set {key}.probe<={len(idx)} to silence this")
    order = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))
    return taskset.x[idx[order[:n]]]
