"""PNG plots: per-chain accuracy bars (one bar per measure) and CMC curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = ["tab:blue", "tab:gray", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
STYLES = ["-", "--", ":", "-."]


def plot_accuracy(rows: list[dict], path: str | Path, chance: float | None = None) -> Path:
    """One panel per protocol: accuracy of each chain, the measures side by side (overall rows left out)."""
    rows = [r for r in rows if r["chain"] != "all"]
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    measures = list(dict.fromkeys(r["measure"] for r in rows))
    width = 0.8 / max(1, len(measures))
    fig, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 3.6), squeeze=False)
    for ax, proto in zip(axes[0], protocols):
        sel = [r for r in rows if r["protocol"] == proto]
        chains = sorted({r["chain"] for r in sel})
        x = np.arange(len(chains))
        for i, measure in enumerate(measures):
            pick = {r["chain"]: r for r in sel if r["measure"] == measure}
            mean = [pick[c]["accuracy_mean"] if c in pick else np.nan for c in chains]
            sd = [(pick[c]["accuracy_sd"] or 0.0) if c in pick else 0.0 for c in chains]
            fixed = [pick[c]["accuracy"] if c in pick else np.nan for c in chains]
            pos = x + (i - (len(measures) - 1) / 2) * width
            ax.bar(pos, mean, width, yerr=sd, capsize=2, color=COLORS[i % len(COLORS)], label=measure)
            ax.plot(pos, fixed, "kd", ms=4, label="fixed split" if i == 0 else None)
        if chance is not None and proto == "classification":
            ax.axhline(chance, color="k", ls=":", lw=1, label="chance")
        alpha = sel[0]["alpha"]
        ax.axhline(1 - alpha, color="tab:red", ls="--", lw=1, label=f"1 - alpha = {1 - alpha:.2f}")
        ax.set_xticks(x, [str(c) for c in chains])
        ax.set_xlabel("chain / layer")
        ax.set_ylabel("top-1 accuracy" if proto == "classification" else "rank-1")
        ax.set_ylim(0, 1.05)
        ax.set_title(proto + " (bars: mean ± sd over seed splits)", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_cmc(cmc: dict, path: str | Path) -> Path:
    """CMC curves, one line per (chain, measure): color = chain, line style = measure."""
    measures = list(dict.fromkeys(m for _, m in sorted(cmc)))
    top = 1 + max(c for c, _ in cmc)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for (chain, measure), curve in sorted(cmc.items()):
        ranks = np.arange(1, len(curve) + 1)
        ax.plot(ranks, curve, STYLES[measures.index(measure) % len(STYLES)], marker="o", ms=3,
                color=plt.cm.viridis(chain / top), label=f"{measure} {chain}")
    ax.set_xlabel("rank k")
    ax.set_ylabel("CMC (hit rate at k)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("retrieval on unseen tasks")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
