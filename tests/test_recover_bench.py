"""The random-teacher benchmark's draws, rows and summary (weightsim/recover/bench.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from weightsim.recover.bench import ACTIVATIONS, D_IN, DEPTHS, WIDTH, TeacherSpec, draw_specs, run_teacher, summarize
from weightsim.recover.options import ECConfig


def test_draws_cover_every_class_in_range_and_repeat_exactly():
    specs = draw_specs(configs=3, seeds=3, bench_seed=0)
    assert len(specs) == len(DEPTHS) * len(ACTIVATIONS) * 9
    assert Counter(s.cls for s in specs) == {f"{d}x {a}": 9 for d in DEPTHS for a in ACTIVATIONS}
    assert all(D_IN[0] <= s.d_in <= D_IN[1] and len(s.widths) == s.depth for s in specs)
    assert all(WIDTH[0] <= w <= WIDTH[1] for s in specs for w in s.widths)
    assert len({s.name for s in specs}) == len(specs)  # 3 seeds of each architecture, no teacher twice
    assert draw_specs(3, 3, 0) == specs and draw_specs(3, 3, 1) != specs


def test_a_teacher_row_per_preset_and_success_follows_its_numbers():
    ec = ECConfig(n_students=4, student_steps=60, finetune_steps=30)
    rows = run_teacher(TeacherSpec(1, "tanh", 6, (3,), 1), ec)
    assert [r["preset"] for r in rows] == ["robust", "reference"]
    for r in rows:
        assert r["probes"] == 4 * (7 * 12 + 13)  # 4 x one student's parameters: 6-12-1
        want = r["recovered_frac"] == 1.0 and r["overhead"] <= 0.10 and r["weight_rel_err"] < 1e-3
        assert r["success"] == want and r["class"] == "1x tanh" and r["seconds"] > 0


def test_summary_counts_successes_per_class_and_preset():
    base = {"optimizer": "lbfgs", "recovered_frac": 1.0, "overhead": 0.0, "seconds": 1.0}
    rows = [{**base, "class": "1x tanh", "preset": "robust", "success": True},
            {**base, "class": "1x tanh", "preset": "robust", "success": "False", "recovered_frac": 0.5},  # as read from CSV
            {**base, "class": "2x relu", "preset": "reference", "success": "True"}]
    table = {(r["class"], r["preset"]): r for r in summarize(rows)}
    assert table["1x tanh", "robust"]["successes"] == 1 and table["1x tanh", "robust"]["teachers"] == 2
    assert table["1x tanh", "robust"]["recovered_frac"] == pytest.approx(0.75)
    assert table["2x relu", "reference"]["success_rate"] == 1.0
