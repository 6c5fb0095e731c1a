"""Weak evidence named: the smallest p-value classification's null can give, the warnings that
say when it cannot fall below alpha (before and after the fits), the retrieval chance level, and
sketch advice that names a setting a machine can run."""

from __future__ import annotations

import warnings

import pytest
import torch

from weightsim.chains.options import ChainOptions, sketch_note
from weightsim.errors import WeightsimWarning
from weightsim.htt.evidence import check_perfect_scores, check_power
from weightsim.htt.protocols import shuffled
from weightsim.htt.study import Split, Study, retrieval_chance
from weightsim.htt.stats import distinct_labelings, smallest_p_value


def test_distinct_labelings_and_the_smallest_p():
    assert distinct_labelings(2, 2) == pytest.approx(6) and distinct_labelings(2, 6) == pytest.approx(924)
    assert distinct_labelings(50, 60) == float("inf")
    assert smallest_p_value(99, 2, 2) == pytest.approx((1 + 99 / 6) / 100)
    assert smallest_p_value(99, 50, 60) == pytest.approx(1 / 100)
    # the null's own shuffles reproduce the true labeling of 2 tasks x 2 nets about once in 6
    labels = torch.tensor([0, 0, 1, 1])
    same = (shuffled(labels, 6000, 0) == labels).all(1).double().mean().item()
    assert same == pytest.approx(1 / 6, abs=0.02)


def messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, WeightsimWarning)]


def test_too_few_tasks_or_permutations_are_named_before_the_fits():
    with pytest.warns(WeightsimWarning) as record:
        check_power(2, 2, 99, 0.05)  # 2 tasks x 2 nets: 6 labelings
    (m,) = messages(record)
    assert m.startswith("classification cannot show p < protocol.alpha=0.05: its smallest attainable p-value is 0.175")
    assert "only 6 distinct labelings" in m and "raise dataset.train_tasks" in m and "zoo.seeds" in m
    assert "protocol.n_permutations" not in m  # 99 heads are not what limits it
    with pytest.warns(WeightsimWarning) as record:
        check_power(5, 6, 9, 0.05)  # 10 heads: p >= 0.1
    (m,) = messages(record)
    assert "protocol.n_permutations=9 shuffled-label heads give p >= 1/10" in m
    assert "raise protocol.n_permutations to 40 or more" in m and "dataset.train_tasks" not in m
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightsimWarning)
        check_power(5, 6, 99, 0.05)  # enough of both
        check_power(2, 2, 0, 0.05)  # no null, no p-value
        check_power(2, 6, 99, 0.05)  # the defaults: 924 labelings, smallest p ~ 0.011


def row(measure, chain, accuracy, p, n=8) -> dict:
    return {"protocol": "classification", "measure": measure, "chain": chain, "accuracy": accuracy,
            "p_value": p, "n": n}


def test_a_perfect_score_that_the_null_matches_is_named_after_the_fits():
    rows = [row("chain_gram", 1, 1.0, 0.22), row("chain_gram", 2, 1.0, 0.2), row("raw", 1, 1.0, 0.01),
            row("raw", 2, 0.75, 0.4), row("chain_gram", "all", 1.0, 0.22),
            {**row("chain_gram", 1, 1.0, 0.5), "protocol": "retrieval"}]
    with pytest.warns(WeightsimWarning) as record:
        check_perfect_scores(rows, 0.05, 99)
    (m,) = messages(record)
    assert m.startswith("classification scores 100 % on 8 test nets but its p-value stays >= protocol.alpha=0.05 "
                        "(chain_gram chain(s) 1, 2; lowest p 0.2)")
    assert "up to 21 of 99 shuffled-label heads score 100 % too" in m and "raise dataset.train_tasks" in m
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightsimWarning)
        check_perfect_scores(rows[2:4] + rows[-1:], 0.05, 99)  # significant, or not perfect, or retrieval
        check_perfect_scores([row("raw", 1, 1.0, None)], 0.05, 0)


def test_retrieval_chance_counts_each_query_tasks_share_of_the_gallery():
    unseen = [{"task": t} for t in (5, 5, 5, 6, 6, 7, 7, 7)]
    study = Study(None, None, [], [], unseen, [0, 1], 1, 0)
    split = lambda q, g: Split(0, [], torch.zeros(0), [], torch.zeros(0), q, g)  # noqa: E731
    assert retrieval_chance(study, split([0, 3, 5], [1, 2, 4, 6, 7])) == pytest.approx((2 + 1 + 2) / 15)
    assert retrieval_chance(study, split([0, 3], [1, 4])) == pytest.approx(0.5)
    assert retrieval_chance(study, split([], [])) is None


def plan(rows: list[int], remedies: list[str]) -> list[dict]:
    return [{"chain": i + 1, "rows_exact": d, "remedy": r} for i, (d, r) in enumerate(zip(rows, remedies))]


def test_sketch_advice_names_a_budget_a_machine_can_hold():
    # conv chains grow 9x per 3x3 layer: chain 3's exact Gram (18.25 MiB) can be exact, chain 4's (1.44 GiB) not
    conv = plan([27, 243, 2187, 19683, 177147], ["exact", "exact", "sketch", "sketch", "sketch"])
    note = sketch_note(conv, ChainOptions())
    assert "chains.budget_mb=18.25 makes chain(s) [3] exact" in note
    assert "the exact Gram of chain 4 alone is 1.44 GiB per net" in note and "chains.batch_budget_mb=512.0" in note
    assert "chains.sketch_dim=256 gives a closer sketch (32896 features per chain)" in note
    assert "119709" in note and "chains.budget_mb=119709" not in note  # the old advice: 117 GiB per net
    # an MLP on 64 x 64 x 3 inputs: every chain has d = 12288 (576 MiB): the sketch is the setting
    mlp = sketch_note(plan([12288] * 4, ["sketch"] * 4), ChainOptions())
    assert "so the sketch is the usable setting for chain(s) [1, 2, 3, 4]" in mlp and "chains.budget_mb=" in mlp
    assert "chains.budget_mb=576" not in mlp
    small = sketch_note(plan([64], ["sketch"]), ChainOptions(budget_mb=0.001, sketch_dim=16))
    assert small.endswith("for exact features set chains.budget_mb=0.02 or chains.remedy=exact")
    assert sketch_note(conv, ChainOptions(remedy="sketch")) is None
    assert sketch_note(plan([27], ["exact"]), ChainOptions()) is None
