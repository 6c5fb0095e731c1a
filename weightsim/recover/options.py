"""Expand-and-Cluster's settings: the one source of their defaults.

Hydra reads ``ECConfig`` as the structured config ``ec=default`` of conf/recover.yaml
(weightsim/config.py), so a value set on the command line is type-checked before any training, and
``expand_and_cluster(teacher, x, ec)`` takes the same object (keyword overrides replace fields).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

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
    finetune_steps: int = 2000  # after each collapse and at the end
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
