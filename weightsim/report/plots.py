"""PNG plots: per-chain accuracy bars (normalized vs raw) and CMC curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_accuracy(rows: list[dict], path: str | Path, chance: float | None = None) -> Path:
    """One panel per protocol: accuracy of each chain, normalized chains beside raw layers."""
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    fig, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 3.6), squeeze=False)
    for ax, proto in zip(axes[0], protocols):
        sel = [r for r in rows if r["protocol"] == proto]
        chains = sorted({r["chain"] for r in sel})
        x = np.arange(len(chains))
        for off, normalized, color in [(-0.2, True, "tab:blue"), (0.2, False, "tab:gray")]:
            acc = [next((r["accuracy"] for r in sel if r["chain"] == c and r["normalized"] == normalized), np.nan)
                   for c in chains]
            ax.bar(x + off, acc, 0.4, color=color, label="normalized chain" if normalized else "raw layer")
        if chance is not None and proto == "classification":
            ax.axhline(chance, color="k", ls=":", lw=1, label="chance")
        alpha = sel[0]["alpha"]
        ax.axhline(1 - alpha, color="tab:red", ls="--", lw=1, label=f"1 - alpha = {1 - alpha:.2f}")
        ax.set_xticks(x, [str(c) for c in chains])
        ax.set_xlabel("chain / layer")
        ax.set_ylabel("top-1 accuracy" if proto == "classification" else "rank-1")
        ax.set_ylim(0, 1.05)
        ax.set_title(proto)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_cmc(cmc: dict, path: str | Path) -> Path:
    """CMC curves, one line per (chain, kind): solid = normalized, dashed = raw."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for (chain, kind), curve in sorted(cmc.items()):
        ranks = np.arange(1, len(curve) + 1)
        ax.plot(ranks, curve, "-" if kind == "normalized" else "--", marker="o", ms=3,
                color=plt.cm.viridis(chain / (1 + max(c for c, _ in cmc))), label=f"{kind} {chain}")
    ax.set_xlabel("rank k")
    ax.set_ylabel("CMC (share of queries matched)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("retrieval on unseen tasks")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
