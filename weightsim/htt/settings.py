"""The HTT protocol's settings: the ``protocol`` and ``classifier`` config groups (their one source
of defaults, Hydra's structured configs ``protocol=htt`` and ``classifier=linear``) and their
validation, done before any net is read."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from weightsim.errors import ConfigError
from weightsim.htt.protocols import decide
from weightsim.measures import measure_class
from weightsim.measures.base import METRICS

PROTOCOLS = ("classification", "retrieval")
SHORT_TASKS = ("lower", "drop")  # what a training task short of usable nets does (study.training_seeds)
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ProtocolConfig:
    """Hypothesis-training-testing: a decision per chain at significance level alpha (docs/htt.md).

    The one source of the ``protocol`` group's defaults (Hydra's structured config ``protocol=htt``).
    """

    alpha: float = 0.05  # accept H0 when error < alpha; the error bound is one-sided at level 1 - alpha
    train_fraction: float = 0.6  # share of each training task's seeds that trains the classifier (paper: 60/40)
    train_seeds: int | None = None  # exact count per task; overrides train_fraction
    tasks: list[int] | None = None  # the training tasks classified (task ids of the zoo); None: every one
    short_tasks: str = "lower"  # a training task short of usable nets (diverged): lower every task's count | drop it
    queries: int = 6  # retrieval: per unseen task, this many seeds query a gallery of the rest
    metric: str = "euclidean"  # distance between weight representations: euclidean | cosine
    max_rank: int = 10  # CMC curve length
    n_permutations: int = 99  # classification null: heads fitted on shuffled task labels (0: off); p >= 1/(1+n)
    retrieval_permutations: int = 9999  # retrieval null: permutations of the gallery's task labels (0: off)
    repeats: int = 3  # seed splits: 0 = the paper's fixed split (lowest seeds train), 1.. seeded random splits
    knn: int = 1  # distance measures: classify a test net by the majority task of its knn nearest training nets
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    measures: list[str] = field(default_factory=lambda: ["chain_gram", "raw"])  # weightsim/measures/registry.py
    chains: list[int] | None = None  # chains to test (1-based); None: every chain both nets have
    feature_budget_gb: float = 4.0  # HTT's features, weights read and Grams held at once; above it, blocks of nets
    device: str = "auto"  # Grams and classifier: auto (the GPU when torch sees one, else the CPU) | cpu | cuda
    verify: bool = True  # check each weight file's SHA-256 against the zoo's manifest as it is read (docs/zoo.md)


@dataclass
class ClassifierConfig:
    """The paper's weight classifier: standardize -> linear projection -> softmax, fitted as
    L2-regularized logistic regression solved to its optimum with L-BFGS in the span of the training
    nets (htt/classifier.py). The one source of the ``classifier`` group's defaults (``classifier=linear``)."""

    l2: float = 1.0  # objective sum CE + l2/2 ||W||^2; l2 = 1 is scikit-learn's default C = 1
    max_iter: int = 500  # L-BFGS iterations (the objective is convex: run to its optimum)


def check_protocol(pc: ProtocolConfig) -> None:
    """Validate the protocol settings, the names of its measures included."""
    decide(0.0, pc.alpha)  # validates alpha
    if not 0 < pc.train_fraction < 1:
        raise ConfigError(f"protocol.train_fraction={pc.train_fraction} must lie in (0, 1)")
    if pc.tasks is not None and len(set(pc.tasks)) < 2:
        raise ConfigError(f"protocol.tasks={list(pc.tasks)} must name at least 2 training tasks (null: every one)")
    if pc.short_tasks not in SHORT_TASKS:
        raise ConfigError(f"unknown protocol.short_tasks '{pc.short_tasks}': choose {' or '.join(SHORT_TASKS)}")
    for p in pc.protocols:
        if p not in PROTOCOLS:
            raise ConfigError(f"unknown protocol '{p}': choose from {', '.join(PROTOCOLS)}")
    if pc.metric not in METRICS:
        raise ConfigError(f"unknown protocol.metric '{pc.metric}': choose {' or '.join(METRICS)}")
    for knob in ("n_permutations", "retrieval_permutations"):
        if getattr(pc, knob) < 0:
            raise ConfigError(f"protocol.{knob}={getattr(pc, knob)} must be >= 0 (0: no null, no p-value)")
    if pc.knn < 1:
        raise ConfigError(f"protocol.knn={pc.knn} must be >= 1 (nearest training nets that vote)")
    if pc.repeats < 1:
        raise ConfigError(f"protocol.repeats={pc.repeats} must be >= 1 (1: the paper's fixed split only)")
    if pc.feature_budget_gb <= 0:
        raise ConfigError(f"protocol.feature_budget_gb={pc.feature_budget_gb} must be > 0")
    htt_device(pc.device)
    if not pc.measures:
        raise ConfigError("protocol.measures is empty: name at least one measure")
    for name in pc.measures:
        measure_class(name)


def htt_device(name: str) -> torch.device:
    """protocol.device as a torch device: auto is the GPU when torch sees one, else the CPU."""
    if name not in DEVICES:
        raise ConfigError(f"protocol.device='{name}': choose from {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("protocol.device=cuda, but torch sees no CUDA GPU here (torch.cuda.is_available() is "
                          "False): set protocol.device=auto or protocol.device=cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")
