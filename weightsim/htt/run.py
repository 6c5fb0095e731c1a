"""Hypothesis-training-testing on a zoo: per measure and chain, a weight classifier trained on some
seeds of the training tasks, tested by the classification protocol (the held-out seeds) and the
retrieval protocol (nets of unseen tasks), with a permutation null, a one-sided error bound, an
effect size and the spread over repeated seed splits; an overall row per measure and protocol
accepts H0 only when every chain does (the paper's Algorithm 1).

The driver, read top to bottom: ``run_htt`` checks the settings (htt/settings.py), opens the study
and its splits (htt/study.py), picks each measure's chains, runs the feature measures through one
shared pass of Grams (htt/features.py) and the distance measures pair by pair, evaluates each chain
and split (htt/evaluate.py) and turns the outcomes into report rows (htt/rows.py)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from weightsim.chains import ChainOptions
from weightsim.errors import ChainError, ConfigError
from weightsim.htt.classifier import one_thread
from weightsim.htt.evaluate import Outcome, evaluate_chain, evaluate_distances
from weightsim.htt.evidence import check_perfect_scores, check_power, check_small_split
from weightsim.htt.features import FeatureSet, feature_grams
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig, check_protocol, htt_device
from weightsim.htt.rows import measure_rows
from weightsim.htt.study import Split, Study, make_split, open_study, retrieval_chance
from weightsim.measures import DistanceMeasure, Measure, MeasureContext, make_measures
from weightsim.trainer import TrainerConfig


def run_htt(zoo_dir: str, pc: ProtocolConfig, cc: ClassifierConfig, co: ChainOptions,
            eval_zoo_dir: str | None = None, seed: int = 0, progress: bool = True,
            measures: list[Measure] | None = None, measure_settings: dict | None = None,
            tc: TrainerConfig | None = None) -> dict:
    """Returns {"rows": report rows, "cmc": {(chain, measure): curve}, "meta": {...}}.

    eval_zoo_dir: cross-network evaluation; the classifier trains on ``zoo_dir`` and is tested on
    the nets of ``eval_zoo_dir`` (same tasks), chain by chain. The measures are those protocol.measures
    names, each built from its entry of ``measure_settings`` (the ``measure`` config node: name ->
    settings; a missing entry: its defaults), the chain options ``co`` and protocol.metric; or
    ``measures``, already built (weightsim-compare passes its own). tc: the flags of the weight
    classifiers' Trainers (the ``trainer`` group; default: TrainerConfig()'s).
    """
    check_protocol(pc)  # validates the settings whatever the measures
    device = htt_device(pc.device)
    measures = measures or make_measures(pc.measures, measure_settings, MeasureContext(co, pc.metric))
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
    plan = [(m, *measure_chains(study, m, pc)) for m in measures]
    bar = tqdm(desc="htt", unit="fit", total=len(splits) * sum(len(chains) for _, chains, _ in plan),
               disable=not progress)
    sets = [FeatureSet(m, chains, [int(keys[c - 1][1]) for c in chains])
            for m, chains, keys in plan if not isinstance(m, DistanceMeasure)]
    shared = iter(feature_runs(study, sets, splits, pc, cc, seed, bar, device, tc) if sets else [])
    report, cmcs, fits = [], {}, []
    for measure, chains, keys in plan:
        runs = distance_runs(study, measure, chains, splits, pc, seed, bar) \
            if isinstance(measure, DistanceMeasure) else next(shared)
        rows, cmc = measure_rows(measure, chains, keys, runs, pc)
        report += rows
        cmcs.update(cmc)
        fits += fit_objectives(measure, runs, splits)
    bar.close()
    check_perfect_scores(report, pc.alpha, pc.n_permutations)
    meta = run_meta(study, splits[0], pc, measures, zoo_dir, eval_zoo_dir)
    meta.update(device=str(device), fits=fits)
    return {"rows": report, "cmc": cmcs, "meta": meta}


def fit_objectives(measure: Measure, runs: dict[int, list[dict[str, Outcome]]], splits: list[Split]) -> list[dict]:
    """The final objective (per net and head) of each weight-classifier fit of ``measure``: one per
    chain and split, for run.json and one table in the logger (a fit is one value, not a curve)."""
    return [{"measure": measure.name, "chain": c, "repeat": split.repeat, "objective": first.objective}
            for c, per_split in runs.items() for split, outcomes in zip(splits, per_split)
            if (first := next(iter(outcomes.values()))).objective is not None]


def measure_chains(study: Study, measure: Measure, pc: ProtocolConfig) -> tuple[list[int], list]:
    """The chains of ``measure`` to test and the train zoo's (key, feature size) per chain."""
    keys_a = measure.chain_keys(study.train_zoo)
    keys_b = measure.chain_keys(study.eval_zoo) if study.cross else keys_a
    chains = shared_chains([k for k, _ in keys_a], [k for k, _ in keys_b], pc.chains, study.cross)
    measure.announce(study.train_zoo, chains)
    if study.cross:
        measure.announce(study.eval_zoo, chains)
    return chains, keys_a


def distance_runs(study: Study, measure: DistanceMeasure, chains: list[int], splits: list[Split], pc: ProtocolConfig,
                  seed: int, bar) -> dict[int, list[dict[str, Outcome]]]:
    """A distance measure's outcomes per chain and split (k-NN, no classifier). The unseen nets'
    distances do not depend on the split: computed once."""
    pick = lambda ds: [ds[c - 1] for c in chains]  # noqa: E731
    none = [torch.zeros(0, 0)] * len(chains)
    classify = "classification" in pc.protocols  # else no test-net distances are needed
    unseen = pick(measure.distances(study.eval_zoo, study.unseen, study.eval_zoo, study.unseen)) \
        if study.unseen else none
    runs: dict[int, list[dict[str, Outcome]]] = {c: [] for c in chains}
    for split in splits:
        test_train = pick(measure.distances(study.eval_zoo, split.test, study.train_zoo, split.train)) \
            if classify else none
        test = pick(measure.distances(study.eval_zoo, split.test, study.eval_zoo, split.test)) \
            if classify else none
        for c, dtt, dt, du in zip(chains, test_train, test, unseen):
            runs[c].append(evaluate_distances(dtt, dt, du, split, study, pc, seed + c))
            bar.update(1)
    return runs


def feature_runs(study: Study, sets: list[FeatureSet], splits: list[Split], pc: ProtocolConfig, cc: ClassifierConfig,
                 seed: int, bar, device: torch.device, tc: TrainerConfig | None = None) -> list[dict[int, list[dict[str, Outcome]]]]:
    """Per feature set, its outcomes per chain and split: the weight classifier on the Grams that one
    shared pass over the nets gives for every measure and split (``feature_grams``)."""
    grams = feature_grams(study, splits, sets, pc.feature_budget_gb, device, bar.set_postfix_str)
    out = []
    for fs, per_chain in zip(sets, grams):
        runs: dict[int, list[dict[str, Outcome]]] = {c: [] for c in fs.chains}
        for r, split in enumerate(splits):
            for c, per_split in zip(fs.chains, per_chain):
                g_train, g_test, g_unseen = per_split[r]
                with one_thread():
                    runs[c].append(evaluate_chain(g_train, g_test, g_unseen, split, study, pc, cc, seed + c, device, tc))
                bar.update(1)
        out.append(runs)
    return out


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


def run_meta(study: Study, split: Split, pc: ProtocolConfig, measures: list[Measure],
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
            "measures": {m.name: m.describe(study.train_zoo) for m in measures},
            "task_nets": task_nets(study.train_zoo.rows)}


def task_nets(rows: list[dict]) -> dict:
    """What the tested nets are, beside every HTT number: their SGD steps, mean final train loss and
    mean train / test accuracy over the usable (not diverged) nets; None where the zoo has no such
    record (imported nets)."""
    usable = [r for r in rows if not r.get("diverged")]

    def mean(key):
        values = [float(r[key]) for r in usable if r.get(key) not in (None, "")]
        return sum(values) / len(values) if values else None
    steps = sorted({int(r["steps"]) for r in usable if r.get("steps") not in (None, "")})
    return {"nets": len(usable), "steps": steps[0] if len(steps) == 1 else (steps or None),
            "train_loss": mean("final_loss"), "train_acc": mean("train_acc"), "test_acc": mean("test_acc")}
