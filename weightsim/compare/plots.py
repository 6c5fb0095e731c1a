"""Plots of weightsim-compare: eps-curves per layer, the CKA layer x layer heat map, and the CMC
curves of every measure on one figure. All three name a layer alike, ``layer k (module)``: k counts
the net's layers in order (layer k's weights are chain k, its activations the module named;
``layer_labels``). Each ``plot_*`` saves what its ``draw_*`` builds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from weightsim.report.plots import MARKERS, dodge, save

RELATION_STYLE = {"same_task": ("tab:blue", "-"), "different_task": ("tab:orange", "--"),
                  "shuffled_input": ("tab:gray", ":")}


def layer_labels(names: list[str]) -> dict[str, str]:
    """Module name -> its label: ``names`` are every activation layer of the net in order (hidden
    layers, then the logits), so layer k is the output of the net's k-th weight layer (chain k)."""
    return {name: f"layer {k} ({name})" for k, name in enumerate(names, 1)}


def finish_panels(fig, axes, ylabel: str):
    """The first panel's y label and legend."""
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def draw_eps_curves(summary: list[dict], labels: dict[str, str] | None = None):
    """One panel per layer: mean match similarity s(eps) (± sd, the band clipped to [0, 1] where
    s lies) of every relation over eps."""
    rows = [r for r in summary if r["measure"] == "match"]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.2), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers):
        sel = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["eps"])
        eps = [r["eps"] for r in sel]
        for rel, (color, style) in RELATION_STYLE.items():
            if not sel[0][f"{rel}_n"]:
                continue
            mean = np.array([r[f"{rel}_mean"] for r in sel])
            sd = np.array([r[f"{rel}_sd"] for r in sel])
            ax.plot(eps, mean, style, color=color, marker="o", ms=3, label=rel.replace("_", " "))
            ax.fill_between(eps, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1), color=color, alpha=0.15)
        ax.set_title((labels or {}).get(layer, f"layer {layer}"), fontsize=9)
        ax.set_xlabel("eps")
        ax.set_ylim(-0.02, 1.02)
    return finish_panels(fig, axes, "max-match similarity s(eps)")


def plot_eps_curves(summary: list[dict], path: str | Path, labels: dict[str, str] | None = None) -> Path:
    return save(draw_eps_curves(summary, labels), path)


def draw_cka_heatmap(matrix: list[list[float]], layers: list[str], rate: float, labels: dict[str, str] | None = None):
    """Mean linear CKA of layer i of net A (rows) against layer j of net B (columns), same-task pairs."""
    m = np.asarray(matrix)
    names = [(labels or {}).get(n, n) for n in layers]
    fig, ax = plt.subplots(figsize=(2.0 + 0.8 * len(layers), 1.6 + 0.6 * len(layers)))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(layers)):
        for j in range(len(layers)):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="w" if m[i, j] < 0.6 else "k")
    ax.set_xticks(range(len(layers)), names, fontsize=7, rotation=45, ha="right")
    ax.set_yticks(range(len(layers)), names, fontsize=7)
    ax.set_xlabel("net B (other seed)")
    ax.set_ylabel("net A")
    ax.set_title(f"linear CKA, same task (identification {rate:.0%})", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_cka_heatmap(matrix: list[list[float]], layers: list[str], rate: float, path: str | Path,
                     labels: dict[str, str] | None = None) -> Path:
    return save(draw_cka_heatmap(matrix, layers, rate, labels), path)


def draw_cmc_measures(cmc: dict, names: list[str] | None = None):
    """One panel per layer k (chain k; ``names``: the net's activation layers, to name its module),
    one CMC line per measure, each with its own marker and dodged sideways a little, so measures
    whose curves coincide (all at 1.0, say) stay visible."""
    chains = sorted({c for c, _ in cmc})
    measures = list(dict.fromkeys(m for _, m in cmc))
    fig, axes = plt.subplots(1, len(chains), figsize=(3.2 * len(chains), 3.2), squeeze=False, sharey=True)
    for ax, chain in zip(axes[0], chains):
        for i, measure in enumerate(measures):
            if (chain, measure) in cmc:
                curve = cmc[(chain, measure)]
                ax.plot(np.arange(1, len(curve) + 1) + dodge(i, len(measures)), curve, marker=MARKERS[i % len(MARKERS)],
                        ms=4, mfc="none", color=plt.cm.tab10(i), label=measure)
        named = names is not None and chain <= len(names)
        ax.set_title(f"layer {chain}" + (f" ({names[chain - 1]})" if named else ""), fontsize=9)
        ax.set_xlabel("rank k (dodged to stay visible)")
        ax.set_ylim(0, 1.05)
    return finish_panels(fig, axes, "CMC (hit rate at k)")


def plot_cmc_measures(cmc: dict, path: str | Path, names: list[str] | None = None) -> Path:
    return save(draw_cmc_measures(cmc, names), path)
