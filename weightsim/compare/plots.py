"""Plots of weightsim-compare: eps-curves per layer, the CKA layer x layer heat map, and the CMC
curves of every measure on one figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RELATION_STYLE = {"same_task": ("tab:blue", "-"), "different_task": ("tab:orange", "--"),
                  "shuffled_input": ("tab:gray", ":")}


def save_panels(fig, axes, ylabel: str, path: str | Path) -> Path:
    """The first panel's y label and legend, then the PNG."""
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_eps_curves(summary: list[dict], path: str | Path) -> Path:
    """One panel per layer: mean match similarity s(eps) (± sd) of every relation over eps."""
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
            ax.fill_between(eps, mean - sd, mean + sd, color=color, alpha=0.15)
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xlabel("eps")
        ax.set_ylim(-0.02, 1.02)
    return save_panels(fig, axes, "max-match similarity s(eps)", path)


def plot_cka_heatmap(matrix: list[list[float]], layers: list[str], rate: float, path: str | Path) -> Path:
    """Mean linear CKA of layer i of net A (rows) against layer j of net B (columns), same-task pairs."""
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(layers), 1.0 + 0.6 * len(layers)))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(layers)):
        for j in range(len(layers)):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="w" if m[i, j] < 0.6 else "k")
    ax.set_xticks(range(len(layers)), layers, fontsize=7, rotation=45)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_xlabel("net B (other seed) layer")
    ax.set_ylabel("net A layer")
    ax.set_title(f"linear CKA, same task (identification {rate:.0%})", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_cmc_measures(cmc: dict, path: str | Path) -> Path:
    """One panel per chain / layer index, one CMC line per measure."""
    chains = sorted({c for c, _ in cmc})
    measures = list(dict.fromkeys(m for _, m in cmc))
    fig, axes = plt.subplots(1, len(chains), figsize=(3.2 * len(chains), 3.2), squeeze=False, sharey=True)
    for ax, chain in zip(axes[0], chains):
        for i, measure in enumerate(measures):
            if (chain, measure) in cmc:
                curve = cmc[(chain, measure)]
                ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", ms=3, color=plt.cm.tab10(i), label=measure)
        ax.set_title(f"chain / layer {chain}", fontsize=9)
        ax.set_xlabel("rank k")
        ax.set_ylim(0, 1.02)
    return save_panels(fig, axes, "CMC (hit rate at k)", path)
