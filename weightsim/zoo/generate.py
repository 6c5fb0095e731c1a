"""Generate a model zoo: every (task, seed) net, trained in populations, written atomically.

Resumable: a population already complete on disk is skipped, and the plan (which nets form which
population) depends only on the config, so a rerun after a crash ends with the same files.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from torch import nn
from tqdm.auto import tqdm

from weightsim.data.tasks import TaskSet
from weightsim.errors import ConfigError
from weightsim.zoo.population import PopulationModule, init_member, member_seeds, steps_for
from weightsim.zoo.store import ZooWriter

# a net whose training accuracy is within this margin of chance counts as diverged
CHANCE_MARGIN = 0.05


@dataclass
class ZooConfig:
    seeds: int = 30
    seed_offset: int = 0  # first seed: seed blocks of a sweep are [offset, offset + seeds)
    epochs: float = 30
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None
    population_size: int = 512  # most members trained together
    base_seed: int = 0
    accelerator: str = "auto"

    def training(self) -> dict:
        """What defines the weights (not where or how fast): part of the zoo's identity."""
        return {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay",
                                              "grad_clip", "base_seed")}


def plan_populations(taskset: TaskSet, zc: ZooConfig) -> list[tuple[str, list[tuple[int, int]]]]:
    """Deterministic plan: [(population name, [(task, seed), ...]), ...], chunks of population_size."""
    if zc.seeds < 1 or zc.population_size < 1:
        raise ConfigError(f"zoo.seeds={zc.seeds} and zoo.population_size={zc.population_size} must be >= 1")
    nets = [(t.id, s) for t in taskset.tasks for s in range(zc.seed_offset, zc.seed_offset + zc.seeds)]
    plan = []
    for i in range(0, len(nets), zc.population_size):
        chunk = nets[i:i + zc.population_size]
        (t0, s0), (t1, s1) = chunk[0], chunk[-1]
        plan.append((f"pop_t{t0:03d}s{s0:05d}-t{t1:03d}s{s1:05d}", chunk))
    return plan


def train_population(build: Callable[[], nn.Module], taskset: TaskSet, nets: list[tuple[int, int]],
                     zc: ZooConfig, logger=None) -> tuple[PopulationModule, list[dict]]:
    """Train the nets [(task, seed), ...] as one population; returns the module and manifest rows."""
    seeds = [member_seeds(zc.base_seed, t, s) for t, s in nets]
    members = [init_member(build, a) for a, _ in seeds]
    tasks = [taskset.tasks[t] for t, _ in nets]
    module = PopulationModule(members, taskset.x, tasks, [b for _, b in seeds], zc.batch_size, zc.lr,
                              zc.momentum, zc.weight_decay, zc.grad_clip)
    steps = steps_for(zc.epochs, taskset.tasks, zc.batch_size)
    trainer = L.Trainer(max_steps=steps, accelerator=zc.accelerator, devices=1, logger=logger or False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=max(1, steps // 10), num_sanity_val_steps=0)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*GPU available but not used.*")
        trainer.fit(module, torch.utils.data.DataLoader(range(steps), batch_size=None))
    wall = (time.perf_counter() - t0) / len(nets)
    pad = lambda ts, attr: torch.nn.utils.rnn.pad_sequence([getattr(t, attr) for t in ts], batch_first=True)  # noqa: E731
    train_acc, train_loss = module.evaluate(pad(tasks, "train_idx"), pad(tasks, "train_y"),
                                            [len(t.train_idx) for t in tasks])
    test_acc, test_loss = module.evaluate(pad(tasks, "test_idx"), pad(tasks, "test_y"),
                                          [len(t.test_idx) for t in tasks])
    finite = torch.stack([torch.isfinite(v.flatten(1)).all(1) for v in module.state().values()]).all(0)
    rows = []
    for k, ((t, s), task) in enumerate(zip(nets, tasks)):
        chance = 1.0 / len(task.classes)
        diverged = (not bool(finite[k]) or not torch.isfinite(train_loss[k])
                    or float(train_acc[k]) <= chance + CHANCE_MARGIN)
        rows.append({"task": t, "seed": s, "classes": task.classes, "role": task.role,
                     "train_acc": round(float(train_acc[k]), 6), "test_acc": round(float(test_acc[k]), 6),
                     "final_loss": float(train_loss[k]), "diverged": bool(diverged),
                     "wall_time": round(wall, 6), "steps": steps})
    return module, rows


def generate_zoo(build: Callable[[], nn.Module], taskset: TaskSet, zc: ZooConfig, zoo_dir: str | Path,
                 identity: dict, logger=None, progress: bool = True) -> Path:
    """Train every missing population of the zoo at ``zoo_dir`` and return the directory."""
    writer = ZooWriter(zoo_dir, {**identity, "training": zc.training()})
    plan = plan_populations(taskset, zc)
    done = writer.done()
    todo = [(name, nets) for name, nets in plan if name not in done]
    total = sum(len(n) for _, n in plan)
    bar = tqdm(total=total, initial=total - sum(len(n) for _, n in todo), unit="net",
               desc=f"zoo {Path(zoo_dir).name}", disable=not progress)
    for name, nets in todo:
        module, rows = train_population(build, taskset, nets, zc, logger)
        writer.write(name, module.state(), [{**r, "config_hash": writer.identity["config_hash"]} for r in rows])
        bar.update(len(nets))
        bar.set_postfix(test_acc=f"{sum(r['test_acc'] for r in rows) / len(rows):.3f}")
    bar.close()
    writer.write_manifest_csv()
    return Path(zoo_dir)


def builder(arch, input_shape: tuple[int, ...], num_classes: int) -> Callable[[], nn.Module]:
    """A zero-argument constructor of the task net from an instantiated arch partial."""
    return partial(arch, input_shape=tuple(input_shape), num_classes=num_classes)
