"""What the report and compare plots draw: the chance line of each protocol, CMC curves that stay
visible when they coincide, eps-curve bands inside [0, 1], and one way of naming a layer."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PolyCollection

from weightsim.compare.plots import draw_cka_heatmap, draw_cmc_measures, draw_eps_curves, layer_labels
from weightsim.report.plots import chance_levels, draw_accuracy, draw_cmc


def rows(protocol: str) -> list[dict]:
    return [{"protocol": protocol, "measure": m, "chain": c, "accuracy": 0.9, "accuracy_mean": 0.8,
             "accuracy_sd": 0.1, "alpha": 0.05} for m in ("chain_gram", "raw") for c in (1, 2)]


def test_accuracy_plot_has_a_chance_line_per_protocol():
    meta = {"chance_classification": 0.1, "unseen_tasks": 5}
    assert chance_levels(meta) == {"classification": 0.1, "retrieval": 0.2}
    assert chance_levels({**meta, "chance_retrieval": 0.25})["retrieval"] == 0.25
    fig = draw_accuracy(rows("classification") + rows("retrieval"), chance_levels(meta))
    for ax, (proto, level) in zip(fig.axes, [("classification", 0.1), ("retrieval", 0.2)]):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines[f"chance ({proto})"].get_ydata()) == [level, level]
    plt.close(fig)
    fig = draw_accuracy(rows("classification"), 0.1)  # one float: classification's level, as before
    assert "chance (classification)" in [line.get_label() for line in fig.axes[0].get_lines()]
    plt.close(fig)


def assert_all_visible(lines, curve):
    """Each line draws the curve's values unchanged, and no two lines lie on each other."""
    assert len(lines) >= 2
    for line in lines:
        np.testing.assert_array_equal(line.get_ydata(), curve)
    for a, b in itertools.combinations(lines, 2):
        assert not np.array_equal(a.get_xdata(), b.get_xdata())  # dodged apart
        assert np.abs(np.asarray(a.get_xdata()) - np.asarray(b.get_xdata())).max() < 0.5  # still at its rank
    assert len({line.get_marker() for line in lines}) == len(lines)


def test_coinciding_cmc_curves_stay_visible():
    ones = np.ones(5)
    fig = draw_cmc({(c, "chain_gram"): ones for c in (1, 2, 3, 4)})  # four chains, all at 1.0
    assert_all_visible(fig.axes[0].get_lines(), ones)
    plt.close(fig)
    fig = draw_cmc_measures({(1, m): ones for m in ("chain_gram", "cka", "match", "weight_matching")},
                            names=["2", "4", "logits"])
    assert_all_visible(fig.axes[0].get_lines(), ones)
    assert fig.axes[0].get_title() == "layer 1 (2)"
    plt.close(fig)


def test_eps_bands_are_clipped_and_layers_named_alike():
    summary = [{"measure": "match", "layer": layer, "eps": e, "same_task_mean": 0.95, "same_task_sd": 0.2,
                "same_task_n": 3, "different_task_mean": 0.05, "different_task_sd": 0.2, "different_task_n": 3,
                "shuffled_input_mean": 0.5, "shuffled_input_sd": 0.1, "shuffled_input_n": 3}
               for layer in ("2", "logits") for e in (0.1, 0.3)]
    labels = layer_labels(["2", "4", "logits"])
    assert labels == {"2": "layer 1 (2)", "4": "layer 2 (4)", "logits": "layer 3 (logits)"}
    fig = draw_eps_curves(summary, labels)
    assert [ax.get_title() for ax in fig.axes] == ["layer 1 (2)", "layer 3 (logits)"]
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3
    ys = np.concatenate([p.vertices[:, 1] for band in bands for p in band.get_paths()])
    assert ys.min() >= 0 and ys.max() <= 1 and ys.max() == 1 and ys.min() == 0  # 0.95 + 0.2 and 0.05 - 0.2 cut
    plt.close(fig)
    fig = draw_cka_heatmap(np.eye(3).tolist(), ["2", "4", "logits"], 1.0, labels)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(labels.values())
    plt.close(fig)
