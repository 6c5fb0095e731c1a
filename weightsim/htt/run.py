"""Hypothesis-training-testing on a zoo: per measure and chain, a weight classifier trained on some
seeds of the training tasks, tested by the classification protocol (the held-out seeds) and the
retrieval protocol (nets of unseen tasks), with a permutation null, a one-sided error bound, an
effect size and the spread over repeated seed splits; an overall row per measure and protocol
accepts H0 only when every chain does (the paper's Algorithm 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from weightsim.chains import ChainOptions
from weightsim.errors import ChainError, ConfigError, ZooError, warn
from weightsim.htt.classifier import fit_reduced, gram_reduction, one_thread
from weightsim.htt.evidence import check_perfect_scores, check_power, check_small_split
from weightsim.htt.gram import block_size, blocks_of, split_grams
from weightsim.htt.measures import DistanceMeasure, Measure, get_measure
from weightsim.htt.protocols import (METRICS, accuracy, cmc_curve, decide, distances, effect_size, knn_classify,
                                     knn_null, random_order,
                                     retrieval_null, retrieval_split, split_seeds)
from weightsim.htt.stats import error_upper_bound, mean_sd, permutation_p_value
from weightsim.zoo.view import Zoo

PROTOCOLS = ("classification", "retrieval")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ProtocolConfig:
    """Hypothesis-training-testing: a decision per chain at significance level alpha (docs/htt.md).

    The one source of the ``protocol`` group's defaults (Hydra's structured config ``protocol=htt``).
    """

    alpha: float = 0.05  # accept H0 when error < alpha; the error bound is one-sided at level 1 - alpha
    train_fraction: float = 0.6  # share of each training task's seeds that trains the classifier (paper: 60/40)
    train_seeds: int | None = None  # exact count per task; overrides train_fraction
    queries: int = 6  # retrieval: per unseen task, this many seeds query a gallery of the rest
    metric: str = "euclidean"  # distance between weight representations: euclidean | cosine
    max_rank: int = 10  # CMC curve length
    n_permutations: int = 99  # classification null: heads fitted on shuffled task labels (0: off); p >= 1/(1+n)
    retrieval_permutations: int = 9999  # retrieval null: permutations of the gallery's task labels (0: off)
    repeats: int = 3  # seed splits: 0 = the paper's fixed split (lowest seeds train), 1.. seeded random splits
    knn: int = 1  # distance measures: classify a test net by the majority task of its knn nearest training nets
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    measures: list[str] = field(default_factory=lambda: ["chain_gram", "raw"])  # htt/measures.py
    chains: list[int] | None = None  # chains to test (1-based); None: every chain both nets have
    feature_budget_gb: float = 4.0  # chain features held at once; above it the Grams stream in blocks
    device: str = "auto"  # Grams and classifier: auto (the GPU when torch sees one, else the CPU) | cpu | cuda
    verify: bool = True  # check each weight file's SHA-256 against the zoo's manifest as it is read (docs/zoo.md)


@dataclass
class ClassifierConfig:
    """The paper's weight classifier: standardize -> linear projection -> softmax, fitted as
    L2-regularized logistic regression solved to its optimum with L-BFGS in the span of the training
    nets (htt/classifier.py). The one source of the ``classifier`` group's defaults (``classifier=linear``)."""

    l2: float = 1.0  # objective sum CE + l2/2 ||W||^2; l2 = 1 is scikit-learn's default C = 1
    max_iter: int = 500  # L-BFGS iterations (the objective is convex: run to its optimum)


def check_protocol(pc: ProtocolConfig) -> list[Measure]:
    """Validate the protocol settings; returns the measures they name."""
    decide(0.0, pc.alpha)  # validates alpha
    if not 0 < pc.train_fraction < 1:
        raise ConfigError(f"protocol.train_fraction={pc.train_fraction} must lie in (0, 1)")
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
    return [get_measure(m) for m in pc.measures]


def htt_device(name: str) -> torch.device:
    """protocol.device as a torch device: auto is the GPU when torch sees one, else the CPU."""
    if name not in DEVICES:
        raise ConfigError(f"protocol.device='{name}': choose from {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("protocol.device=cuda, but torch sees no CUDA GPU here (torch.cuda.is_available() is "
                          "False): set protocol.device=auto or protocol.device=cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def shared_chains(keys_a: list, keys_b: list, wanted: list[int] | None, cross: bool) -> list[int]:
    """The chains to test: those ``wanted`` (default: every chain both zoos have). keys_a / keys_b:
    per chain what makes it the same chain in both nets (``Measure.chain_keys``). A chain asked for
    that the two nets do not share is an error naming it."""
    both = [c for c in range(1, min(len(keys_a), len(keys_b)) + 1) if keys_a[c - 1] == keys_b[c - 1]]
    missing = [c for c in (wanted or []) if c not in both]
    where = (f"the train zoo's chains are {keys_a}, the eval zoo's {keys_b}" if cross
             else f"the zoo's chains are {keys_a}")
    if not both:
        raise ChainError(f"the two nets share no chain: {where} (chain l pairs with chain l of the other net "
                         "when both have the same rows d_l and feature size); cross-network runs compare nets "
                         "of one input shape whose first layers agree, e.g. plainnet5 with plainnet6 or leaky")
    if missing:
        raise ChainError(f"chain(s) {missing} do not exist in both nets: {where}; "
                         f"set protocol.chains to some of {both}")
    return list(wanted) if wanted else both


def usable_rows(zoo: Zoo) -> tuple[list[dict], int]:
    rows = zoo.select(diverged=False)
    return rows, len(zoo.rows) - len(rows)


# -- what is tested: the nets, fixed before any split --------------------------------------------
@dataclass
class Study:
    """The usable (not diverged) nets HTT tests. seen_a trains the classifier (train zoo), seen_b is
    tested (the eval zoo's nets of the same tasks; seen_a itself unless cross-network), unseen are
    the eval zoo's unseen-task nets for retrieval (empty when retrieval does not run)."""

    train_zoo: Zoo
    eval_zoo: Zoo
    seen_a: list[dict]
    seen_b: list[dict]
    unseen: list[dict]
    tasks: list[int]
    n_train: int  # training seeds per task
    diverged: int

    @property
    def cross(self) -> bool:
        return self.eval_zoo is not self.train_zoo


def open_study(zoo_dir: str, eval_zoo_dir: str | None, pc: ProtocolConfig) -> Study:
    train_zoo = Zoo(zoo_dir, pc.verify)
    eval_zoo = Zoo(eval_zoo_dir, pc.verify) if eval_zoo_dir else train_zoo
    rows_a, div_a = usable_rows(train_zoo)
    rows_b, div_b = usable_rows(eval_zoo) if eval_zoo is not train_zoo else (rows_a, 0)
    seen_a = [r for r in rows_a if r["role"] == "train"]
    seen_b = [r for r in rows_b if r["role"] == "train"]
    tasks = sorted({r["task"] for r in seen_a})
    if len(tasks) < 2:
        raise ZooError(f"zoo {zoo_dir} has {len(tasks)} usable training task(s); HTT needs at least 2")
    missing = {r["task"] for r in seen_b} - set(tasks)
    if missing:
        raise ZooError(f"eval zoo {eval_zoo_dir} has training tasks {sorted(missing)} that {zoo_dir} lacks")
    n_train = training_seeds(train_zoo, seen_a, tasks, pc)
    unseen = retrieval_nets([r for r in rows_b if r["role"] == "unseen"], pc)
    lost = [r for r in eval_zoo.rows if r["role"] == "unseen" and r["diverged"]]
    if unseen and lost:  # fewer queries or gallery nets for these tasks
        which = ", ".join(f"task {t}: {sum(r['task'] == t for r in lost)} of "
                          f"{sum(r['task'] == t for r in eval_zoo.rows)}" for t in sorted({r["task"] for r in lost}))
        warn(f"diverged nets left out of retrieval ({which}): those unseen tasks query and fill the gallery with "
             f"their usable seeds only (the queries are the protocol.queries={pc.queries} lowest usable seeds)")
    return Study(train_zoo, eval_zoo, seen_a, seen_b, unseen, tasks, n_train, div_a + div_b)


def training_seeds(zoo: Zoo, seen: list[dict], tasks: list[int], pc: ProtocolConfig) -> int:
    """Training seeds per task: protocol.train_seeds, or train_fraction of the smallest task's usable
    nets. Warns when diverged nets left out changed that count."""
    if pc.train_seeds is not None:
        if pc.train_seeds < 1:
            raise ConfigError(f"protocol.train_seeds={pc.train_seeds} must be >= 1")
        return pc.train_seeds
    usable = {t: sum(r["task"] == t for r in seen) for t in tasks}
    stored = {t: sum(r["task"] == t and r["role"] == "train" for r in zoo.rows) for t in tasks}
    n_train = max(1, int(round(pc.train_fraction * min(usable.values()))))
    n_all = max(1, int(round(pc.train_fraction * min(stored.values()))))
    if n_train != n_all:
        lost = ", ".join(f"task {t}: {stored[t] - usable[t]} of {stored[t]}" for t in tasks if stored[t] > usable[t])
        warn(f"diverged nets left out ({lost}) lowered the training seeds per task from {n_all} to {n_train} "
             f"for every task (protocol.train_fraction={pc.train_fraction} of the smallest task's "
             f"{min(usable.values())} usable nets); set protocol.train_seeds to choose the count")
    return n_train


def retrieval_nets(unseen: list[dict], pc: ProtocolConfig) -> list[dict]:
    """The unseen-task nets retrieval runs on, or [] with a warning that says why it is skipped."""
    n_tasks = len({r["task"] for r in unseen})
    if "retrieval" not in pc.protocols:
        if n_tasks:
            warn(f"retrieval skipped: protocol.protocols={list(pc.protocols)} leaves it out, although the zoo "
                 f"has {n_tasks} unseen task(s); add retrieval to protocol.protocols to run it")
        return []
    if n_tasks < 2:
        warn(f"retrieval skipped: the zoo has {n_tasks} unseen task(s) with usable nets and retrieval needs at "
             f"least 2 (with one, every gallery net matches); raise dataset.unseen_tasks and train the zoo again")
        return []
    return unseen


# -- one split of the nets -----------------------------------------------------------------------
@dataclass
class Split:
    """Repeat ``repeat``'s nets per role: training nets (from seen_a) and their labels, test nets
    (from seen_b), and the unseen nets' query and gallery indices (into study.unseen)."""

    repeat: int
    train: list[dict]
    y_train: Tensor
    test: list[dict]
    y_test: Tensor
    queries: list[int]
    gallery: list[int]


def make_split(study: Study, pc: ProtocolConfig, repeat: int, seed: int) -> Split:
    """Repeat 0: the paper's fixed split (lowest seeds train / are queries); repeat r > 0: the same
    counts per task, chosen by a seeded random order of the seeds."""
    key = random_order(seed, repeat) if repeat else None
    tr, _ = split_seeds(study.seen_a, study.n_train, key=key)
    _, te = split_seeds(study.seen_b, study.n_train, key=key)
    label = {t: i for i, t in enumerate(study.tasks)}
    train, test = [study.seen_a[i] for i in tr], [study.seen_b[i] for i in te]
    q, g = retrieval_split(study.unseen, pc.queries, key) if study.unseen else ([], [])
    return Split(repeat, train, torch.tensor([label[r["task"]] for r in train]), test,
                 torch.tensor([label[r["task"]] for r in test]), q, g)


@dataclass
class FeatureSet:
    """A feature measure and the chains of it HTT tests."""

    measure: Measure
    chains: list[int]
    dims: list[int]  # feature size per chain


def feature_grams(study: Study, splits: list[Split], sets: list[FeatureSet], co: ChainOptions, budget_gb: float,
                  device: torch.device, progress=None) -> list[list[list[tuple[Tensor, Tensor, Tensor]]]]:
    """[set][chain][split] -> (g_train (N, N), g_test (M, N), g_unseen (U, N)): the Grams of the split's
    standardized features, rows in the split's order (htt/gram.py). Every net is read once for all
    measures, splits and protocols (more often only when the features exceed ``budget_gb``), in the
    order of its zoo's files, so each file is read once per pass."""
    zoos = [study.train_zoo] + ([study.eval_zoo] if study.cross else [])
    wanted = [study.seen_a, study.seen_b + study.unseen] if study.cross else [study.seen_a + study.unseen]
    nets: list[tuple[int, dict]] = []
    for z, rows in enumerate(wanted):
        nets += [(z, r) for r in sorted(rows, key=lambda r: (r["file"], r["index"]))]
    index = {(z, r["task"], r["seed"]): i for i, (z, r) in enumerate(nets)}
    a, b = 0, len(zoos) - 1  # the zoo of the training nets, of the tested nets

    def featurize(block: list[int]) -> list[Tensor]:
        zoo, rows = zoos[nets[block[0]][0]], [nets[i][1] for i in block]
        stacked = {k: v.to(device) for k, v in zoo.stacked(rows).items()}
        out = []
        for fs in sets:
            feats = fs.measure.features_from(zoo, rows, stacked, co)
            out += [feats[c - 1].float() for c in fs.chains]
        return out

    size = block_size(4 * sum(sum(fs.dims) for fs in sets), budget_gb * 2**30)
    trains = [[index[(a, r["task"], r["seed"])] for r in s.train] for s in splits]
    dtypes = [fs.measure.gram_dtype for fs in sets for _ in fs.chains]
    grams = split_grams(len(nets), blocks_of([z for z, _ in nets], size), trains, featurize, dtypes,
                        hold_all=len(nets) <= 2 * size, device=device, progress=progress)
    out, k = [], 0
    for fs in sets:
        per_chain = []
        for _ in fs.chains:
            per_split = []
            for r, s in enumerate(splits):
                g = grams[r][k]
                pick = lambda rows, z: g[[index[(z, row["task"], row["seed"])] for row in rows]]  # noqa: E731
                per_split.append((pick(s.train, a), pick(s.test, b), pick(study.unseen, b)))
            per_chain.append(per_split)
            k += 1
        out.append(per_chain)
    return out


# -- one chain, one split ------------------------------------------------------------------------
@dataclass
class Outcome:
    """One protocol on one chain and split: accuracy (top-1 / rank-1) over n tested nets, the
    effect size, the null statistics (repeat 0 only) and the CMC curve (retrieval)."""

    accuracy: float
    n: int
    effect: float
    null: Tensor | None = None
    cmc: np.ndarray | None = None


def evaluate_chain(g_train: Tensor, g_test: Tensor, g_unseen: Tensor, split: Split, study: Study, pc: ProtocolConfig,
                   cc: ClassifierConfig, seed: int, logger=None, tag: str = "classifier",
                   device: torch.device | str = "cpu") -> dict[str, Outcome]:
    """Fit the weight classifier on the training Gram (N, N) and run the protocols: g_test (M, N) and
    g_unseen (U, N) are the other nets' inner products with the training nets. The null (label-
    permutation heads, gallery-label permutations) is computed on repeat 0 only."""
    first = split.repeat == 0
    proj, reduced = gram_reduction(g_train)  # z(x) V = (z(x) Z^T) U S^-1
    n_null = pc.n_permutations if first and "classification" in pc.protocols else 0
    model = fit_reduced(reduced.float(), split.y_train, len(study.tasks), n_null, seed, cc.l2, cc.max_iter,
                        "gpu" if torch.device(device).type == "cuda" else "cpu", logger, tag)
    out = {}
    with torch.no_grad():
        if "classification" in pc.protocols:
            logits = model.head((g_test @ proj).float())  # (H, M, T): head 0 true labels, 1.. shuffled
            acc = accuracy(logits, split.y_test)
            out["classification"] = Outcome(float(acc[0]), len(split.y_test),
                                            effect_size(distances(logits[0], logits[0], pc.metric), split.y_test),
                                            acc[1:] if first else None)
        if study.unseen:
            rep = model.head((g_unseen @ proj).float())[0]  # (U, T): the weight representation
            labels = torch.tensor([r["task"] for r in study.unseen])
            q, g = split.queries, split.gallery
            dist = distances(rep[q], rep[g], pc.metric)
            curve = cmc_curve(dist, labels[q], labels[g], pc.max_rank)
            null = retrieval_null(dist, labels[q], labels[g], pc.retrieval_permutations, seed) if first else None
            out["retrieval"] = Outcome(float(curve[0]), len(q), effect_size(distances(rep, rep, pc.metric), labels),
                                       null, curve)
    return out


def evaluate_distances(d_test_train: Tensor, d_test: Tensor, d_unseen: Tensor, split: Split, study: Study,
                       pc: ProtocolConfig, seed: int) -> dict[str, Outcome]:
    """The protocols on a distance measure's chain: d_test_train (M, N) from the test nets to the
    training nets, d_test (M, M) among the test nets, d_unseen (U, U) among the unseen nets.
    Classification is k-nearest-neighbour (its null: the training labels shuffled); retrieval and
    the effect size read the distances directly, as for the classifier's logits."""
    first, out = split.repeat == 0, {}
    if "classification" in pc.protocols:
        pred = knn_classify(d_test_train, split.y_train, pc.knn)
        null = knn_null(d_test_train, split.y_train, split.y_test, pc.n_permutations, pc.knn, seed) \
            if first and pc.n_permutations else None
        out["classification"] = Outcome(float((pred == split.y_test).double().mean()), len(split.y_test),
                                        effect_size(d_test, split.y_test), null)
    if study.unseen:
        labels = torch.tensor([r["task"] for r in study.unseen])
        q, g = split.queries, split.gallery
        dist = d_unseen[q][:, g]
        curve = cmc_curve(dist, labels[q], labels[g], pc.max_rank)
        null = retrieval_null(dist, labels[q], labels[g], pc.retrieval_permutations, seed) if first else None
        out["retrieval"] = Outcome(float(curve[0]), len(q), effect_size(d_unseen, labels), null, curve)
    return out


# -- report rows ---------------------------------------------------------------------------------
def chain_row(protocol: str, measure: str, chain: int | str, dim: int | None, runs: list[Outcome],
              pc: ProtocolConfig) -> dict:
    """One report row from a chain's outcomes over the repeats (runs[0]: the paper's split)."""
    first = runs[0]
    error = 1.0 - first.accuracy
    bound = error_upper_bound(int(round(error * first.n)), first.n, 1 - pc.alpha)
    mean, sd = mean_sd([o.accuracy for o in runs])
    null = first.null if first.null is not None and first.null.numel() else None
    return {"protocol": protocol, "measure": measure, "chain": chain, "accuracy": first.accuracy,
            "accuracy_mean": mean, "accuracy_sd": sd, "repeats": len(runs),
            "effect_size": None if math.isnan(first.effect) else first.effect,
            "error": error, "error_upper_bound": bound, "bound_level": 1 - pc.alpha, "alpha": pc.alpha,
            "decision": decide(error, pc.alpha), "decision_bound": "accept" if bound < pc.alpha else "reject",
            "p_value": permutation_p_value(first.accuracy, null.numpy()) if null is not None else None,
            "null_mean": float(null.mean()) if null is not None else None,
            "rank5": float(first.cmc[min(4, len(first.cmc) - 1)]) if first.cmc is not None else None,
            "feature_dim": dim, "n": first.n}


def overall_row(rows: list[dict]) -> dict:
    """The paper's Algorithm 1 over chains: accept H0 only when every chain accepts (likewise for
    the bound's decision). Worst chain: lowest accuracy and effect size, highest error, bound and
    p-value (every chain beats chance at level a iff the largest p <= a)."""
    ps = [r["p_value"] for r in rows]
    return {**rows[0], "chain": "all", "accuracy": min(r["accuracy"] for r in rows),
            "accuracy_mean": min(r["accuracy_mean"] for r in rows), "accuracy_sd": None,
            "effect_size": min((r["effect_size"] for r in rows if r["effect_size"] is not None), default=None),
            "error": max(r["error"] for r in rows),
            "error_upper_bound": max(r["error_upper_bound"] for r in rows),
            "decision": "accept" if all(r["decision"] == "accept" for r in rows) else "reject",
            "decision_bound": "accept" if all(r["decision_bound"] == "accept" for r in rows) else "reject",
            "p_value": None if None in ps else max(ps), "null_mean": None, "rank5": None, "feature_dim": None}


def measure_chains(study: Study, measure: Measure, pc: ProtocolConfig, co: ChainOptions) -> tuple[list[int], list]:
    """The chains of ``measure`` to test and the train zoo's (key, feature size) per chain."""
    keys_a = measure.chain_keys(study.train_zoo, co)
    keys_b = measure.chain_keys(study.eval_zoo, co) if study.cross else keys_a
    chains = shared_chains([k for k, _ in keys_a], [k for k, _ in keys_b], pc.chains, study.cross)
    measure.announce(study.train_zoo, co, chains)
    if study.cross:
        measure.announce(study.eval_zoo, co, chains)
    return chains, keys_a


def distance_runs(study: Study, measure: DistanceMeasure, chains: list[int], splits: list[Split], pc: ProtocolConfig,
                   co: ChainOptions, seed: int, bar) -> dict[int, list[dict[str, Outcome]]]:
    """A distance measure's outcomes per chain and split (k-NN, no classifier). The unseen nets'
    distances do not depend on the split: computed once."""
    pick = lambda ds: [ds[c - 1] for c in chains]  # noqa: E731
    none = [torch.zeros(0, 0)] * len(chains)
    classify = "classification" in pc.protocols  # else no test-net distances are needed
    unseen = pick(measure.distances(study.eval_zoo, study.unseen, study.eval_zoo, study.unseen, co)) \
        if study.unseen else none
    runs: dict[int, list[dict[str, Outcome]]] = {c: [] for c in chains}
    for split in splits:
        test_train = pick(measure.distances(study.eval_zoo, split.test, study.train_zoo, split.train, co)) \
            if classify else none
        test = pick(measure.distances(study.eval_zoo, split.test, study.eval_zoo, split.test, co)) \
            if classify else none
        for c, dtt, dt, du in zip(chains, test_train, test, unseen):
            runs[c].append(evaluate_distances(dtt, dt, du, split, study, pc, seed + c))
            bar.update(1)
    return runs


def feature_runs(study: Study, sets: list[FeatureSet], splits: list[Split], pc: ProtocolConfig, cc: ClassifierConfig,
                 co: ChainOptions, seed: int, logger, bar,
                 device: torch.device) -> list[dict[int, list[dict[str, Outcome]]]]:
    """Per feature set, its outcomes per chain and split: the weight classifier on the Grams that one
    shared pass over the nets gives for every measure and split (``feature_grams``)."""
    grams = feature_grams(study, splits, sets, co, pc.feature_budget_gb, device, bar.set_postfix_str)
    out = []
    for fs, per_chain in zip(sets, grams):
        runs: dict[int, list[dict[str, Outcome]]] = {c: [] for c in fs.chains}
        for r, split in enumerate(splits):
            for c, per_split in zip(fs.chains, per_chain):
                g_train, g_test, g_unseen = per_split[r]
                tag = f"classifier/chain{c}_{fs.measure.name}" + (f"_repeat{split.repeat}" if split.repeat else "")
                with one_thread():
                    runs[c].append(evaluate_chain(g_train, g_test, g_unseen, split, study, pc, cc, seed + c, logger,
                                                  tag, device))
                bar.update(1)
        out.append(runs)
    return out


def measure_rows(measure: Measure, chains: list[int], keys_a: list, runs: dict[int, list[dict[str, Outcome]]],
                 pc: ProtocolConfig) -> tuple[list[dict], dict]:
    """One measure's report rows (per chain, then the overall row per protocol) and its CMC curves
    {(chain, measure): curve} of the paper's split."""
    rows, cmc = [], {}
    for protocol in [p for p in PROTOCOLS if p in runs[chains[0]][0]]:
        per_chain = [chain_row(protocol, measure.name, c, int(keys_a[c - 1][1]), [r[protocol] for r in runs[c]], pc)
                     for c in chains]
        rows += per_chain + [overall_row(per_chain)]
    for c in chains:
        if "retrieval" in runs[c][0]:
            cmc[(c, measure.name)] = runs[c][0]["retrieval"].cmc
    return rows, cmc


def run_htt(zoo_dir: str, pc: ProtocolConfig, cc: ClassifierConfig, co: ChainOptions,
            eval_zoo_dir: str | None = None, seed: int = 0, logger=None, progress: bool = True,
            measures: list[Measure] | None = None) -> dict:
    """Returns {"rows": report rows, "cmc": {(chain, measure): curve}, "meta": {...}}.

    eval_zoo_dir: cross-network evaluation; the classifier trains on ``zoo_dir`` and is tested on
    the nets of ``eval_zoo_dir`` (same tasks), chain by chain. measures: measure objects with their
    own settings to test instead of those protocol.measures names (weightsim-compare's).
    """
    named = check_protocol(pc)  # validates the settings whatever the measures
    device = htt_device(pc.device)
    measures = measures or named
    study = open_study(zoo_dir, eval_zoo_dir, pc)
    if "classification" not in pc.protocols and not study.unseen:
        raise ConfigError("nothing to test: protocol.protocols has only retrieval and it is skipped (see the "
                          "warning); add classification to protocol.protocols")
    if "classification" in pc.protocols:
        check_power(len(study.tasks), study.n_train, pc.n_permutations, pc.alpha)
        n_test = min(sum(r["task"] == t for r in study.seen_b) for t in study.tasks) - study.n_train
        check_small_split(study.n_train, n_test, len(study.tasks),
                          [m.name for m in measures if not isinstance(m, DistanceMeasure)])
    splits = [make_split(study, pc, r, seed) for r in range(pc.repeats)]
    plan = [(m, *measure_chains(study, m, pc, co)) for m in measures]
    bar = tqdm(desc="htt", unit="fit", total=len(splits) * sum(len(chains) for _, chains, _ in plan),
               disable=not progress)
    sets = [FeatureSet(m, chains, [int(keys[c - 1][1]) for c in chains])
            for m, chains, keys in plan if not isinstance(m, DistanceMeasure)]
    shared = iter(feature_runs(study, sets, splits, pc, cc, co, seed, logger, bar, device) if sets else [])
    report, cmcs = [], {}
    for measure, chains, keys in plan:
        runs = distance_runs(study, measure, chains, splits, pc, co, seed, bar) \
            if isinstance(measure, DistanceMeasure) else next(shared)
        rows, cmc = measure_rows(measure, chains, keys, runs, pc)
        report += rows
        cmcs.update(cmc)
    bar.close()
    check_perfect_scores(report, pc.alpha, pc.n_permutations)
    meta = run_meta(study, splits[0], pc, co, measures, zoo_dir, eval_zoo_dir)
    meta["device"] = str(device)
    return {"rows": report, "cmc": cmcs, "meta": meta}


def retrieval_chance(study: Study, split: Split) -> float | None:
    """Rank-1 of retrieval by chance: a query's nearest gallery net drawn at random is of its task
    with probability (its task's gallery nets) / (gallery nets), averaged over the queries (1 / unseen
    tasks when every task has as many). None without retrieval."""
    if not split.queries or not split.gallery:
        return None
    tasks = [study.unseen[i]["task"] for i in split.gallery]
    return sum(tasks.count(study.unseen[q]["task"]) for q in split.queries) / (len(split.queries) * len(tasks))


def run_meta(study: Study, split: Split, pc: ProtocolConfig, co: ChainOptions, measures: list[Measure],
             zoo_dir: str, eval_zoo_dir: str | None) -> dict:
    """The run's facts for run.json / report.md."""
    return {"zoo_dir": str(zoo_dir), "eval_zoo_dir": str(eval_zoo_dir or zoo_dir),
            "nets": len(study.train_zoo.rows), "diverged_excluded": study.diverged,
            "training_tasks": len(study.tasks), "unseen_tasks": len({r["task"] for r in study.unseen}),
            "train_seeds_per_task": study.n_train, "test_nets": len(split.test),
            "queries": len(split.queries), "gallery": len(split.gallery), "repeats": pc.repeats,
            "chance_classification": 1 / len(study.tasks),
            **({"chance_retrieval": chance} if (chance := retrieval_chance(study, split)) is not None else {}),
            "null_classification": f"{pc.n_permutations} classifier heads fitted on shuffled task labels "
                                   "(label-permutation null), tested on the held-out seeds",
            "null_retrieval": f"{pc.retrieval_permutations} permutations of the gallery's task labels over "
                              "the same distances (chance null)",
            "bound_level": 1 - pc.alpha,
            "measures": {m.name: m.describe(study.train_zoo, co) for m in measures}}
