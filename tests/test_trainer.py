"""The trainer group: one builder (weightsim/trainer.py) for the Lightning Trainers the library
builds, with the flags of TrainerConfig; the zoo's populations train in a Trainer with the flags
they are given."""

from __future__ import annotations

from functools import partial

import weightsim.zoo.generate as generate
from weightsim.data.digits import digits
from weightsim.nets.mlp import MLP
from weightsim.trainer import TrainerConfig, silent_trainer
from weightsim.zoo.generate import ZooConfig, generate_zoo


def test_silent_trainer_has_the_configs_flags_and_the_uses_arguments_win():
    quiet = silent_trainer(max_steps=3, accelerator="cpu", logger=False)
    assert quiet.checkpoint_callback is None and quiet.progress_bar_callback is None
    assert quiet.num_sanity_val_steps == 0 and quiet.max_steps == 3 and quiet.num_devices == 1
    told = silent_trainer(TrainerConfig(enable_progress_bar=True, num_sanity_val_steps=2), max_steps=3,
                          accelerator="cpu", logger=False, num_sanity_val_steps=1)
    assert told.progress_bar_callback is not None  # from the config
    assert told.num_sanity_val_steps == 1  # the use's own argument wins over the config's 2


def test_generate_zoo_trains_its_populations_with_the_trainer_flags_it_is_given(tmp_path, monkeypatch):
    seen = []

    def spy(tc=None, **run):
        seen.append(tc)
        return silent_trainer(tc, **run)

    monkeypatch.setattr(generate, "silent_trainer", spy)
    taskset = digits(train_tasks=2, unseen_tasks=0)
    build = partial(MLP, input_shape=taskset.input_shape, num_classes=2, hidden=4, depth=2)
    ident = {"dataset": {"name": "digits", "config": {}}, "arch": {"name": "mlp", "config": {}},
             "tasks": [t.meta() for t in taskset.tasks], "config_hash": "t", "input_shape": [64], "num_classes": 2}
    tc = TrainerConfig(enable_model_summary=True)
    generate_zoo(build, taskset, ZooConfig(seeds=1, epochs=1, accelerator="cpu"), tmp_path / "zoo", ident,
                 progress=False, tc=tc)
    assert seen and all(t is tc for t in seen)
