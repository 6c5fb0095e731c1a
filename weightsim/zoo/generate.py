"""Generate a model zoo: every (task, seed) net, trained in populations, written atomically.

Resumable: a population already complete on disk is skipped, and the plan (which nets form which
population) depends only on the config, so a rerun after a crash ends with the same files.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import lightning as L
import torch
from torch import nn
from tqdm.auto import tqdm

from weightsim.data.shapes import shape_of
from weightsim.data.tasks import TaskSet
from weightsim.errors import ConfigError
from weightsim.trainer import TrainerConfig, silent_trainer
from weightsim.zoo.heap import freed_memory_reused
from weightsim.zoo.memory import PopulationMemory, measure_population
from weightsim.zoo.options import ZooConfig
from weightsim.zoo.population import PopulationModule, population_module
from weightsim.zoo.store import ZooWriter

# a net whose training accuracy is within this margin of chance counts as diverged
CHANCE_MARGIN = 0.05


@dataclass
class Sizing:
    """How many members train together, how many samples per member evaluation takes at once, and
    what that population holds on its device (zoo/memory.py)."""

    population_size: int
    eval_chunk: int
    memory: PopulationMemory

    @property
    def peak_bytes(self) -> int:
        """Planned peak bytes on the device: the larger of training and evaluation."""
        return self.memory.peak(self.population_size, self.eval_chunk)

    def __str__(self) -> str:
        m, k = self.memory, self.population_size
        return (f"{k} nets per population, evaluation in chunks of {self.eval_chunk} samples; planned peak "
                f"{self.peak_bytes / 2**30:.2f} GiB (data {m.data / 2**30:.2f} GiB, "
                f"~{m.train_member / 2**20:.1f} MiB per net in training)")


_MEASURED: dict[str, PopulationMemory] = {}


def size_population(build: Callable[[], nn.Module], taskset: TaskSet, zc: ZooConfig, total: int) -> Sizing:
    """Population size from ``zc.population_size`` or, when None, as many as fit ``zc.memory_budget_gb``
    with everything the population holds on its device (the data included); the evaluation chunk
    from the same budget."""
    budget = zc.memory_budget_gb * 2**30
    shape = shape_of(taskset)
    # measured once per process for the same net, data shape and training (a sweep, the tests); only a
    # partial's repr names its net by content (a lambda's names an address that may be reused)
    key = repr((build, shape, zc.batch_size, zc.momentum, zc.weight_decay, zc.grad_clip, zc.vectorize, zc.accelerator))
    if key not in _MEASURED or not isinstance(build, partial):
        _MEASURED[key] = measure_population(build, shape, zc)
    memory = _MEASURED[key]
    if zc.population_size is None:
        k = memory.population_size(budget, total)
    else:
        k = min(zc.population_size, total)
    return Sizing(k, memory.eval_chunk(budget, k), memory)


def plan_populations(taskset: TaskSet, zc: ZooConfig, population_size: int,
                     done: set[tuple[int, int]] = frozenset()) -> list[tuple[str, list[tuple[int, int]]]]:
    """Deterministic plan of what is left to train: [(population name, [(task, seed), ...]), ...].

    The nets of this seed block ([seed_offset, seed_offset + seeds) for every task) that are not in
    ``done``, in (task, seed) order, in chunks of ``population_size``. Populations are written
    all-or-nothing in plan order, so a rerun after a crash plans exactly the chunks the first run
    had left, with the same names; and a net already on disk is never trained twice.
    """
    if zc.seeds < 1 or population_size < 1 or zc.seed_offset < 0:
        raise ConfigError(f"zoo.seeds={zc.seeds}, zoo.seed_offset={zc.seed_offset} and population size "
                          f"{population_size} must be >= 1, >= 0 and >= 1")
    nets = [(t.id, s) for t in taskset.tasks for s in range(zc.seed_offset, zc.seed_offset + zc.seeds)
            if (t.id, s) not in done]
    plan = []
    for i in range(0, len(nets), population_size):
        chunk = nets[i:i + population_size]
        (t0, s0), (t1, s1) = chunk[0], chunk[-1]
        plan.append((f"pop_t{t0:03d}s{s0:05d}-t{t1:03d}s{s1:05d}", chunk))
    return plan


class StepBar(L.Callback):
    """A progress bar over the SGD steps of one population (a large population is one long fit)."""

    def __init__(self, steps: int, members: int):
        self.steps, self.members = steps, members

    def on_train_start(self, trainer, module):
        self.bar = tqdm(total=self.steps, unit="step", leave=False, desc=f"population of {self.members}")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.bar.update(1)
        if batch_idx % 20 == 0:
            self.bar.set_postfix(loss=f"{float(module.member_loss.mean()):.3f}")

    def on_train_end(self, trainer, module):
        self.bar.close()


LOSS_POINTS = 100  # a population's loss curve: about this many points, whatever its steps


class LossLog(L.Callback):
    """The population's training loss to the job's logger, throttled: every ``steps // LOSS_POINTS``
    steps (and the last) ``zoo/train_loss``, the mean over the members of their batch loss, with
    ``zoo/population`` (its number in the job) against the population's step (docs/wandb.md)."""

    def __init__(self, steps: int, population: int):
        self.every, self.population = max(1, steps // LOSS_POINTS), population

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:  # reads the device once per logged point
            for logger in trainer.loggers:
                logger.log_metrics({"zoo/train_loss": float(module.member_loss.mean()),
                                    "zoo/population": self.population}, step=step)


@contextlib.contextmanager
def tf32(on: bool) -> Iterator[None]:
    """While inside, float32 matmuls and cuDNN convolutions on CUDA may use TF32 (10-bit mantissa
    products, float32 sums) when ``on``; the previous settings come back after."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if on:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def train_population(build: Callable[[], nn.Module], taskset: TaskSet, nets: list[tuple[int, int]],
                     zc: ZooConfig, logger=None, eval_chunk: int = 512, progress: bool = False,
                     population: int = 0, tc: TrainerConfig | None = None) -> tuple[PopulationModule, list[dict]]:
    """Train the nets [(task, seed), ...] as one population (a Trainer with the flags of ``tc``);
    returns the module and manifest rows.
    With a ``logger``: the loss curve (``LossLog``) and, at the end, the population's mean train and
    test accuracy (``zoo/population_train_acc``, ``zoo/population_test_acc``); ``population`` numbers it."""
    module = population_module(build, taskset, nets, zc)
    tasks = [taskset.tasks[t] for t, _ in nets]
    steps = zc.total_steps(taskset.tasks)
    trainer = silent_trainer(tc, max_steps=steps, accelerator=zc.accelerator, logger=logger or False,
                             log_every_n_steps=max(1, steps // 10),
                             callbacks=([StepBar(steps, len(nets))] if progress else [])
                             + ([LossLog(steps, population)] if logger else []))
    use_tf32 = zc.tf32 and trainer.strategy.root_device.type == "cuda"  # TF32 exists only on CUDA
    t0 = time.perf_counter()
    with warnings.catch_warnings(), tf32(use_tf32):
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*GPU available but not used.*")
        trainer.fit(module, torch.utils.data.DataLoader(range(steps), batch_size=None))
    release_trainer(trainer, module)
    wall = (time.perf_counter() - t0) / len(nets)
    pad = lambda ts, attr: torch.nn.utils.rnn.pad_sequence([getattr(t, attr) for t in ts], batch_first=True)  # noqa: E731
    train_acc, train_loss = module.evaluate(pad(tasks, "train_idx"), pad(tasks, "train_y"),
                                            [len(t.train_idx) for t in tasks], eval_chunk)
    test_acc, test_loss = module.evaluate(pad(tasks, "test_idx"), pad(tasks, "test_y"),
                                          [len(t.test_idx) for t in tasks], eval_chunk)
    finite = torch.stack([torch.isfinite(v.reshape(len(nets), -1)).all(1) for v in module.state().values()
                          if v.is_floating_point()]).all(0).cpu()  # (K,), read once
    rows = []
    for k, ((t, s), task) in enumerate(zip(nets, tasks)):
        chance = 1.0 / len(task.classes)
        diverged = (not bool(finite[k]) or not torch.isfinite(train_loss[k])
                    or float(train_acc[k]) <= chance + CHANCE_MARGIN)
        rows.append({"task": t, "seed": s, "classes": task.classes, "role": task.role,
                     "train_acc": round(float(train_acc[k]), 6), "test_acc": round(float(test_acc[k]), 6),
                     "final_loss": float(train_loss[k]), "diverged": bool(diverged),
                     "wall_time": round(wall, 6), "steps": steps, "vectorize": module.vectorize,
                     **({"tf32": True} if use_tf32 else {})})
    if logger:
        mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
        logger.log_metrics({"zoo/population_train_acc": mean("train_acc"), "zoo/population_test_acc": mean("test_acc"),
                            "zoo/population": population}, step=steps)
    return module, rows


def release_trainer(trainer: L.Trainer, module: PopulationModule) -> None:
    """Free what only training needed before evaluation: the optimizer's momentum and the gradients;
    and bring the module back to the training device (Lightning's teardown moved it to the CPU)."""
    device = trainer.strategy.root_device
    for opt in trainer.optimizers:
        opt.state.clear()
    module.zero_grad(set_to_none=True)
    module.trainer = None
    module.to(device)


def generate_zoo(build: Callable[[], nn.Module], taskset: TaskSet, zc: ZooConfig, zoo_dir: str | Path,
                 identity: dict, logger=None, progress: bool = True, tc: TrainerConfig | None = None) -> Path:
    """Train every net of this seed block that ``zoo_dir`` lacks, and return the directory.

    Each population is written atomically and only then marked done (store.ZooWriter.write), so a
    crash at any point leaves a zoo that loads, and rerunning the same command completes it. ``tc``:
    the flags of the populations' Trainers (weightsim/trainer.py).
    """
    if zc.threads is not None:
        torch.set_num_threads(zc.threads)
    with freed_memory_reused(zc.reuse_freed_memory):  # given back to the OS after training (zoo/heap.py)
        _train_missing(build, taskset, zc, zoo_dir, identity, logger, progress, tc)
    return Path(zoo_dir)


def _train_missing(build: Callable[[], nn.Module], taskset: TaskSet, zc: ZooConfig, zoo_dir: str | Path,
                   identity: dict, logger, progress: bool, tc: TrainerConfig | None) -> None:
    """The nets of this seed block that ``zoo_dir`` lacks, trained population by population."""
    writer = ZooWriter(zoo_dir, {**identity, "training": zc.training()})
    block = {(t.id, s) for t in taskset.tasks for s in range(zc.seed_offset, zc.seed_offset + zc.seeds)}
    done = writer.done_nets() & block
    sizing = size_population(build, taskset, zc, max(1, len(block)))
    todo = plan_populations(taskset, zc, sizing.population_size, done)
    if progress:
        print(f"zoo {zoo_dir}: {len(done)} of {len(block)} nets of this seed block on disk; "
              f"{sum(len(n) for _, n in todo)} to train; {sizing}; zoo.vectorize={zc.vectorize}", flush=True)
    bar = tqdm(total=len(block), initial=len(done), unit="net", desc=f"zoo {Path(zoo_dir).name}",
               disable=not progress)
    for number, (name, planned) in enumerate(todo):
        on_disk = writer.done_nets()  # a concurrent job with an overlapping seed block may have trained some
        nets = [n for n in planned if n not in on_disk]
        bar.update(len(planned) - len(nets))
        if not nets:
            continue
        module, rows = train_population(build, taskset, nets, zc, logger, sizing.eval_chunk, progress, number, tc)
        writer.write(name, module.state(), [{**r, "config_hash": writer.identity.get("config_hash")} for r in rows])
        bar.update(len(nets))
        bar.set_postfix(test_acc=f"{sum(r['test_acc'] for r in rows) / len(rows):.3f}")
    bar.close()
    writer.write_manifest_csv()


def builder(arch, input_shape: tuple[int, ...], num_classes: int) -> Callable[[], nn.Module]:
    """A zero-argument constructor of the task net from an instantiated arch partial."""
    return partial(arch, input_shape=tuple(input_shape), num_classes=num_classes)
