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
from weightsim.zoo.many import VECTORIZE
from weightsim.zoo.population import PopulationModule, population_module, steps_for
from weightsim.zoo.store import STORAGE_DTYPES, ZooWriter

# a net whose training accuracy is within this margin of chance counts as diverged
CHANCE_MARGIN = 0.05


@dataclass
class ZooConfig:
    """How each task net is trained: ``seeds`` nets per task, trained in populations (docs/zoo.md).

    The one source of the ``zoo`` config group's defaults: Hydra reads this class as the structured
    config ``zoo=default`` (weightsim/config.py), so a value set on the command line is type-checked.
    """

    seeds: int = 30
    seed_offset: int = 0  # seed block: this job trains seeds [seed_offset, seed_offset + seeds)
    epochs: float = 30  # passes over the largest task's training set (same step count for every net)
    steps: int | None = None  # SGD steps per net; overrides epochs (NameData in the paper: 10 000 of batch 1)
    batch_size: int = 32
    lr: float = 0.05
    lr_drops: list[float] | None = None  # step schedule: at these fractions of training, lr *= lr_gamma
    lr_gamma: float = 0.1  # (the paper's NameData: lr_drops=[0.7], lr 0.1 -> 0.01 after 7 000 of 10 000 steps)
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None  # per-member gradient-norm clipping
    population_size: int | None = None  # most nets trained together; None: as many as fit memory_budget_gb
    memory_budget_gb: float = 2.0  # device memory one population may use: data, params, grads, momentum, activations
    base_seed: int = 0  # net (task, seed) draws init and data order from SeedSequence([base_seed, task, seed])
    accelerator: str = "auto"
    threads: int | None = None  # torch CPU threads of this job (None: torch's default); not in the identity
    vectorize: str = "auto"  # auto: stacked (one wide net) where the net allows, else vmap; or stacked | vmap | loop
    reuse_freed_memory: bool = True  # glibc: keep freed memory for reuse (zoo/heap.py); not in the identity
    dtype: str = "float32"  # storage dtype of the weights on disk: float32 | bfloat16 | float16 (training is float32)
    tf32: bool = False  # CUDA only: TF32 matmuls and convolutions while training; not in the identity

    def __post_init__(self):
        """Every setting in range, checked when the config is built (one error line, before any work)."""
        if self.dtype not in STORAGE_DTYPES:
            raise ConfigError(f"zoo.dtype='{self.dtype}': choose from {', '.join(STORAGE_DTYPES)} (the dtype the "
                              f"zoo stores its weights in; training is float32 either way)")
        positive = {"seeds": self.seeds, "batch_size": self.batch_size, "lr": self.lr,
                    "memory_budget_gb": self.memory_budget_gb, "epochs": self.epochs if self.steps is None else 1,
                    "grad_clip": 1 if self.grad_clip is None else self.grad_clip, "lr_gamma": self.lr_gamma}
        for knob, value in positive.items():
            if not value > 0:
                raise ConfigError(f"zoo.{knob}={value} must be > 0")
        nullable = {"steps": (self.steps, "from zoo.epochs"), "population_size": (self.population_size, "from the budget"),
                    "threads": (self.threads, "torch's default")}
        for knob, (value, null) in nullable.items():
            if value is not None and value < 1:
                raise ConfigError(f"zoo.{knob}={value} must be >= 1 (or null: {null})")
        if self.seed_offset < 0 or self.weight_decay < 0:
            raise ConfigError(f"zoo.seed_offset={self.seed_offset} and zoo.weight_decay={self.weight_decay} must be >= 0")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"zoo.momentum={self.momentum} must lie in [0, 1)")
        drops = list(self.lr_drops or [])
        if any(not 0 < f < 1 for f in drops) or drops != sorted(drops):
            raise ConfigError(f"zoo.lr_drops={drops} must be increasing fractions of training in (0, 1), "
                              "e.g. [0.7] for a drop after 70 % of the steps")
        if self.vectorize not in VECTORIZE:
            raise ConfigError(f"zoo.vectorize='{self.vectorize}': choose from {', '.join(VECTORIZE)}")

    def training(self) -> dict:
        """What defines the weights (not where or how fast): part of the zoo's identity. The options
        added later (steps, the lr schedule, a storage dtype other than float32) count only when set,
        so older zoos keep their identity."""
        out = {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay",
                                             "grad_clip", "base_seed")}
        if self.steps is not None:
            out["steps"] = self.steps
        if self.lr_drops:
            out.update(lr_drops=list(self.lr_drops), lr_gamma=self.lr_gamma)
        if self.dtype != "float32":
            out["dtype"] = self.dtype  # a zoo never mixes storage dtypes (store.check_identity)
        return out

    def total_steps(self, tasks: list) -> int:
        """SGD steps of every net: ``steps`` when set, else ``epochs`` passes over the largest task."""
        if self.steps is not None:
            return self.steps
        return steps_for(self.epochs, tasks, self.batch_size)

    def lr_milestones(self, steps: int) -> list[int]:
        """The steps at which the learning rate drops (``lr_drops`` are fractions of ``steps``)."""
        return [round(f * steps) for f in self.lr_drops or []]


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
