"""The settings of a zoo's training (the ``zoo`` config group): ``ZooConfig``, checked when built.
Imports no Lightning, so the CLI checks them before it imports what trains (weightsim/stages/check.py)."""

from __future__ import annotations

from dataclasses import dataclass

from weightsim.errors import ConfigError
from weightsim.zoo.many import VECTORIZE
from weightsim.zoo.store import STORAGE_DTYPES


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
        from weightsim.zoo.population import steps_for  # (Lightning: imported where a zoo is trained)

        return steps_for(self.epochs, tasks, self.batch_size)

    def lr_milestones(self, steps: int) -> list[int]:
        """The steps at which the learning rate drops (``lr_drops`` are fractions of ``steps``)."""
        return [round(f * steps) for f in self.lr_drops or []]
