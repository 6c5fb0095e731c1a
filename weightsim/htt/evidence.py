"""Weak evidence named: classification whose p-value cannot fall below protocol.alpha is said,
with the setting to raise, before the fits (too few permutations, tasks or training nets) and
after them (a perfect score that shuffled-label heads match too often)."""

from __future__ import annotations

import math

from weightsim.errors import warn
from weightsim.htt.stats import distinct_labelings, smallest_p_value

MORE_NETS = "zoo.seeds or protocol.train_seeds (more training nets per task)"
MORE_TASKS = "dataset.train_tasks (more training tasks)"


def check_power(tasks: int, per_task: int, n_permutations: int, alpha: float) -> None:
    """Before any fit: warn when classification's smallest attainable p-value (``smallest_p_value``
    of ``n_permutations`` heads on ``tasks`` training tasks of ``per_task`` nets) is not below alpha."""
    if n_permutations < 1:
        return  # no null, no p-value
    floor = smallest_p_value(n_permutations, tasks, per_task)
    if floor < alpha:
        return
    # floor <= 1 / (1 + P) + 1 / L: each term at or above alpha / 2 is named (at least one is)
    why, fix = [], []
    if 1 / (1 + n_permutations) >= alpha / 2:
        need = math.floor(2 / alpha - 1) + 1  # the fewest heads P with 1 / (1 + P) < alpha / 2
        why.append(f"protocol.n_permutations={n_permutations} shuffled-label heads give p >= 1/{1 + n_permutations}")
        fix.append(f"protocol.n_permutations to {need} or more")
    labelings = distinct_labelings(tasks, per_task)
    if 1 / labelings >= alpha / 2:
        why.append(f"{tasks} training tasks x {per_task} training nets have only {labelings:.0f} distinct labelings, "
                   f"so about one shuffled-label head in {labelings:.0f} is fitted on the true labels and scores "
                   f"as well")
        fix.append(f"{MORE_TASKS} or {MORE_NETS}")
    warn(f"classification cannot show p < protocol.alpha={alpha}: its smallest attainable p-value is {floor:.3g} "
         f"({'; '.join(why)}); raise {' and '.join(fix)}")


def check_perfect_scores(rows: list[dict], alpha: float, n_permutations: int) -> None:
    """After the fits: classification rows that score 100 % with p >= alpha have the smallest p
    their null gives (no higher score exists), so the test cannot reject chance there; said once,
    naming the chains and how many shuffled-label heads scored 100 % too."""
    hit = [r for r in rows if r["protocol"] == "classification" and r["chain"] != "all" and r["p_value"] is not None
           and r["accuracy"] >= 1 - 1e-9 and r["p_value"] >= alpha]
    if not hit:
        return
    where: dict[str, list] = {}
    for r in hit:
        where.setdefault(r["measure"], []).append(r["chain"])
    named = "; ".join(f"{m} chain(s) {', '.join(map(str, cs))}" for m, cs in where.items())
    ties = max(round(r["p_value"] * (1 + n_permutations)) - 1 for r in hit)
    warn(f"classification scores 100 % on {hit[0]['n']} test nets but its p-value stays >= protocol.alpha={alpha} "
         f"({named}; lowest p {min(r['p_value'] for r in hit):.3g}): up to {ties} of {n_permutations} shuffled-label "
         f"heads score 100 % too, because with so few tasks and test nets a labeling close to the true one still "
         f"separates them; a perfect score is the best there is, so raise {MORE_TASKS} or zoo.seeds (more test "
         f"nets per task) for evidence at alpha")


MIN_CLASSIFIER_TRAIN = 3  # training nets per task below which the standardized classifier is unreliable


def check_small_split(n_train: int, n_test: int, tasks: int, fitted: list[str]) -> None:
    """Before any fit: classification with too few nets per task. The standardized weight classifier
    of the measures ``fitted`` (mean and sd per feature from the ``n_train`` x ``tasks`` training
    nets) with under ``MIN_CLASSIFIER_TRAIN`` per task; an effect size that ``n_test`` = 1 test net
    per task leaves undefined."""
    if fitted and n_train < MIN_CLASSIFIER_TRAIN:
        warn(f"only {n_train} training net(s) per task for the standardized weight classifier ({', '.join(fitted)}): "
             f"it standardizes each feature over {n_train * tasks} nets and can reject a chain that nearest-neighbour "
             f"separates; give it at least {MIN_CLASSIFIER_TRAIN} per task (more seeds per task, or "
             f"protocol.train_seeds / protocol.train_fraction), or test the chains by k-NN "
             f"(protocol.measures=[chain_gram_distance])")
    if n_test == 1:
        warn("one test net per task: classification's effect size (distances between test nets of one task) is "
             "undefined and left blank; leave at least 2 test nets per task (lower protocol.train_seeds / "
             "protocol.train_fraction, or more seeds per task)")


MAX_NORM_SPREAD = 1e4  # largest / smallest per-net feature norm of a chain above which the standardization fails


def check_feature_spread(spread: dict[tuple[str, int], tuple[float, float]]) -> None:
    """After featurizing: chains whose per-net feature norms span more than ``MAX_NORM_SPREAD``.
    ``spread`` maps (measure, chain) to the smallest and largest norm over the nets. Each feature is
    standardized over the training nets, so a few nets with features 1e6 x the rest's set the mean
    and sd and leave the rest all but identical: the classifier then fails (MLP-4 at lr 0.05 on
    CIFAR-100, nets at 5e9 x the median on chain 4: 19 % where chains 1-3 score 98-100 %)."""
    wide = [(m, c, lo, hi) for (m, c), (lo, hi) in spread.items() if hi > MAX_NORM_SPREAD * max(lo, 1e-30)]
    if wide:
        which = ", ".join(f"{m} chain {c} ({lo:.3g} to {hi:.3g})" for m, c, lo, hi in wide)
        warn(f"per-net feature norms span more than {MAX_NORM_SPREAD:.0e} x across the nets on {which}: the "
             f"standardization is set by the largest few nets and the classifier can fail on the rest; the nets' "
             f"weight scales differ that much (near-divergent training?): chains.scale=fro sets every net's Gram "
             f"to unit norm, or check the zoo's training")
