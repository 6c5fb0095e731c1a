"""Expand-and-Cluster's settings and weightsim-recover's: the one source of their defaults.

Hydra reads ``ECConfig`` as the structured config ``ec=default`` of conf/recover.yaml and
``RecoverConfig`` as that file's schema (weightsim/stages/recover.py), so a value set on the command
line is type-checked before any training, and ``expand_and_cluster(teacher, x, ec)`` takes the same
object (keyword overrides replace fields).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from weightsim.errors import ConfigError


@dataclass
class ECConfig:
    """docs/recover.md, "Defaults"."""

    activation: str | None = None  # the students' activation; None: the teacher's
    n_students: int = 10  # N
    width_factor: float = 4.0  # rho: student hidden widths = ceil(rho * teacher's)
    gamma: float = 0.5  # a cluster must hold >= int(gamma N) neurons
    beta: float = math.pi / 6  # clusters whose median pairwise angle is above it are dropped
    optimizer: str = "lbfgs"  # lbfgs | adam (the published Adam + plateau schedule; much slower)
    student_steps: int = 1500  # L-BFGS iterations (adam: epochs at most)
    finetune_steps: int = 2000  # after each collapse and at the end (at most)
    student_tol: float = 1e-7  # students (and the students' fine-tune after a collapse) stop at median MSE <= this x Var(y)
    student_dtype: str | None = None  # float32 | float64 | None: float32 with lbfgs, float64 with adam (the students')
    stall: float = 0.01  # robust's deep prune: a trial fine-tune stops once 100 iterations lower its MSE by < this fraction
    lr: float = 1e-3  # adam only (the final fine-tune uses lr / 10)
    metric: str = "raw"  # raw [w; b] | data (pre-activations on the probe data)
    cut: str = "first"  # first (the published cut rule) | stable (experimental)
    top_students: int = 5  # a cluster's neuron comes from the best of the 5 lowest-loss students owning one
    seed: int = 0
    sign_rule: str | None = None  # first (the published) | random; None: the preset's
    drop_below: float = 1e-3  # robust: importance threshold relative to the student's largest neuron
    probes_per_param: float = 4.0  # probes drawn when the teacher's probe count is null: this x one student's params
    min_probes_per_param: float = 2.0  # fewer probes than this x one student's params: a warning
    mse_warn_ratio: float = 100.0  # recovered net's MSE above this x the students' median: a warning

    def replace(self, **overrides) -> ECConfig:
        """A copy with ``overrides``; an unknown name is a ConfigError listing the known ones."""
        known = {f.name for f in fields(self)}
        if bad := sorted(set(overrides) - known):
            raise ConfigError(f"unknown Expand-and-Cluster setting {', '.join(bad)}: choose from {', '.join(sorted(known))}")
        return replace(self, **overrides)


@dataclass
class RecoverConfig:
    """weightsim-recover's settings: conf/recover.yaml's top level (its schema), the teacher group's
    config and Expand-and-Cluster's settings."""

    presets: list[str] = field(default_factory=lambda: ["robust", "reference"])  # each clusters the same students
    tol: float = 1e-3  # a teacher neuron counts as recovered when its abs-cosine distance is below
    threads: int = 1  # torch threads
    progress: bool = True  # print each student fit and clustering step
    teacher: Any = None  # the teacher group's config (conf/teacher/), instantiated by the stage
    ec: ECConfig = field(default_factory=ECConfig)
