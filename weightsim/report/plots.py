"""PNG plots: per-chain accuracy bars (one bar per measure) and CMC curves. Each ``plot_*`` saves
the figure its ``draw_*`` builds (the tests read the drawn data from the latter)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = ["tab:blue", "tab:gray", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
STYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DODGE = 0.3  # curves of one plot spread over this width around each rank, so equal curves stay visible


def chance_levels(meta: dict) -> dict[str, float]:
    """Chance accuracy per protocol from a run's meta: classification 1 / training tasks; retrieval
    rank-1 1 / unseen tasks (each gallery net is of one of them, as many per task) unless the meta
    gives ``chance_retrieval``."""
    out = {"classification": meta.get("chance_classification")}
    if meta.get("chance_retrieval") is not None:
        out["retrieval"] = meta["chance_retrieval"]
    elif meta.get("unseen_tasks"):
        out["retrieval"] = 1 / meta["unseen_tasks"]
    return {k: v for k, v in out.items() if v is not None}


def dodge(i: int, n: int) -> float:
    """Horizontal offset of curve i of n (ranks are whole numbers: an offset moves no value)."""
    return 0.0 if n < 2 else DODGE * (i / (n - 1) - 0.5)


def draw_accuracy(rows: list[dict], chance: float | dict[str, float] | None = None):
    """One panel per protocol: accuracy of each chain, the measures side by side (overall rows left
    out), the chance level of each protocol (``chance``: per protocol, or one float for
    classification) and 1 - alpha. Returns the figure."""
    rows = [r for r in rows if r["chain"] != "all"]
    chance = {"classification": chance} if isinstance(chance, (int, float)) else dict(chance or {})
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
        if chance.get(proto) is not None:
            ax.axhline(chance[proto], color="k", ls=":", lw=1, label=f"chance ({proto})")
        alpha = sel[0]["alpha"]
        ax.axhline(1 - alpha, color="tab:red", ls="--", lw=1, label=f"1 - alpha = {1 - alpha:.2f}")
        ax.set_xticks(x, [str(c) for c in chains])
        ax.set_xlabel("chain / layer")
        ax.set_ylabel("top-1 accuracy" if proto == "classification" else "rank-1")
        ax.set_ylim(0, 1.05)
        ax.set_title(proto + " (bars: mean ± sd over seed splits)", fontsize=9)
    legend = {}
    for ax in axes[0]:  # every panel's entries once (each protocol's chance line is its own)
        for h, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, h)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 6), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def plot_accuracy(rows: list[dict], path: str | Path, chance: float | dict[str, float] | None = None) -> Path:
    return save(draw_accuracy(rows, chance), path)


def draw_cmc(cmc: dict):
    """CMC curves, one line per (chain, measure): color and marker = chain, line style = measure;
    each curve dodged sideways a little, so curves that coincide (all at 1.0, say) stay visible."""
    measures = list(dict.fromkeys(m for _, m in sorted(cmc)))
    top = 1 + max(c for c, _ in cmc)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i, ((chain, measure), curve) in enumerate(sorted(cmc.items())):
        ranks = np.arange(1, len(curve) + 1) + dodge(i, len(cmc))
        ax.plot(ranks, curve, STYLES[measures.index(measure) % len(STYLES)], marker=MARKERS[chain % len(MARKERS)],
                ms=4, mfc="none", color=plt.cm.viridis(chain / top), label=f"{measure} {chain}")
    ax.set_xlabel("rank k (curves dodged sideways to stay visible)")
    ax.set_ylabel("CMC (hit rate at k)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("retrieval on unseen tasks")
    fig.tight_layout()
    return fig


def plot_cmc(cmc: dict, path: str | Path) -> Path:
    return save(draw_cmc(cmc), path)


def save(fig, path: str | Path) -> Path:
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
