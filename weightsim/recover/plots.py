"""Plots of an Expand-and-Cluster run: the dendrogram with its cut, teacher vs recovered weights,
student losses, and the identifiability sweep."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.cluster.hierarchy import dendrogram  # noqa: E402

from weightsim.recover.cluster import Clusters  # noqa: E402


def plot_dendrograms(clusters: dict[str, list[Clusters]], path: str | Path) -> Path:
    """One panel per (preset, hidden layer): the average-linkage dendrogram and the cut (red)."""
    panels = [(p, l, c) for p, cs in clusters.items() for l, c in enumerate(cs) if len(c.linkage)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 3.4), squeeze=False)
    for ax, (preset, l, c) in zip(axes[0], panels):
        dendrogram(c.linkage, ax=ax, no_labels=True, color_threshold=c.cut, above_threshold_color="0.6")
        ax.axhline(c.cut, color="tab:red", ls="--", lw=1, label=f"cut {c.cut:.3g}")
        ax.set_yscale("symlog", linthresh=max(c.cut / 10, 1e-12))  # the cut visible even at ~1e-5
        ax.set_title(f"{preset}: hidden layer {l + 1}, {len(c.members)} clusters kept\n"
                     f"({len(c.used)} neurons, clusters need >= {c.min_size})", fontsize=9)
        ax.set_ylabel("L2 merge height")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_weights(teacher: torch.nn.Module, nets: dict[str, torch.nn.Module], metrics: dict[str, dict],
                 path: str | Path) -> Path:
    """First hidden layer: every [w; b] entry of each teacher neuron against its matched recovered
    neuron's (sign-aligned; ReLU: unit norm), one panel per preset."""
    fig, axes = plt.subplots(1, len(nets), figsize=(4 * len(nets), 3.8), squeeze=False)
    t = torch.cat([teacher[_first(teacher)].weight, teacher[_first(teacher)].bias[:, None]], 1).detach().double()
    for ax, (preset, net) in zip(axes[0], nets.items()):
        lin = net[_first(net)]
        r = torch.cat([lin.weight, lin.bias[:, None]], 1).detach().double()
        relu = isinstance(net[_first(net) + 1], torch.nn.ReLU)
        for i, j, s in metrics[preset]["layers"][0]["pairs"]:
            a, b = t[i], s * r[j]
            if relu:
                a, b = a / a.norm(), b / b.norm()
            ax.plot(a.numpy(), b.numpy(), ".", ms=3)
        lim = float(t.abs().max()) if not relu else 1.0
        ax.plot([-lim, lim], [-lim, lim], "k:", lw=0.8)
        m = metrics[preset]
        ax.set_title(f"{preset}: {m['sizes'][0]} of {m['teacher_sizes'][0]} neurons\n"
                     f"weight rel. err {m['weight_rel_err']:.1e}", fontsize=9)
        ax.set_xlabel("teacher [w; b]" + (" (unit norm)" if relu else ""))
        ax.set_ylabel("recovered, aligned")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _first(net: torch.nn.Module) -> int:
    return next(i for i, m in enumerate(net) if isinstance(m, torch.nn.Linear))


def plot_losses(history: list[tuple[int, list[float]]], path: str | Path) -> Path:
    """Train MSE of every student against the optimizer step."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    if history:
        steps = [h[0] for h in history]
        losses = np.array([h[1] for h in history])
        ax.semilogy(steps, np.maximum(losses, 1e-32), lw=1)
    ax.set_xlabel("step (L-BFGS iteration or Adam epoch)")
    ax.set_ylabel("student train MSE")
    ax.set_title("students", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


SWEEP_KEY = ("activation", "teacher_size", "n_students", "width_factor", "preset")


def sweep_table(rows: list[dict]) -> list[dict]:
    """The overall rows of many runs grouped by SWEEP_KEY (activation, the teacher's hidden neurons, N,
    rho, preset): runs, mean recovered fraction, runs with every neuron recovered, mean and largest
    overhead, median weight error, mean seconds."""
    rows = [r for r in rows if r["layer"] == "all"]
    out = []
    for key in sorted({tuple(r[k] for k in SWEEP_KEY) for r in rows}):
        sel = [r for r in rows if tuple(r[k] for k in SWEEP_KEY) == key]
        out.append({**dict(zip(SWEEP_KEY, key)), "runs": len(sel),
                    "recovered_frac": float(np.mean([r["recovered_frac"] for r in sel])),
                    "all_recovered": sum(r["recovered_frac"] == 1.0 for r in sel),
                    "overhead": float(np.mean([r["overhead"] for r in sel])),
                    "max_overhead": max(r["overhead"] for r in sel),
                    "median_weight_rel_err": float(np.median([r["weight_rel_err"] for r in sel])),
                    "seconds": float(np.mean([r["seconds"] for r in sel]))})
    return out


def plot_sweep(rows: list[dict], path: str | Path) -> Path:
    """Identifiability sweep: mean recovered fraction and size overhead (over the runs of each setting,
    e.g. teacher seeds) vs width factor rho, one line per (activation, teacher size, N, preset); colour:
    activation, line style: N (solid the largest), marker: preset, line width: teacher size."""
    table = sweep_table(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    line = lambda r: (r["activation"], r["teacher_size"], r["n_students"], r["preset"])  # noqa: E731
    keys = sorted({line(r) for r in table})
    acts, sizes = sorted({k[0] for k in keys}), sorted({k[1] for k in keys})
    for act, size, n, preset in keys:
        sel = [r for r in table if line(r) == (act, size, n, preset)]
        rho = [r["width_factor"] for r in sel]
        style = dict(marker="o" if preset == "robust" else "x", ls="-" if n == max(k[2] for k in keys) else "--",
                     color=f"C{acts.index(act)}", alpha=0.9 if preset == "robust" else 0.6,
                     lw=1.0 + sizes.index(size), label=f"{act} {size} N={n} {preset}")
        axes[0].plot(rho, [r["recovered_frac"] for r in sel], **style)
        axes[1].plot(rho, [100 * r["overhead"] for r in sel], **style)
    runs = sorted({r["runs"] for r in table})
    axes[0].set_ylabel("recovered fraction (abs-cos dist < tol)")
    axes[1].set_ylabel("size overhead (%)")
    for ax in axes:
        ax.set_xlabel("width factor rho")
        ax.set_xscale("log", base=2)
    axes[0].set_title(f"mean over {'/'.join(map(str, runs))} run(s) per point", fontsize=9)
    axes[1].axhline(10, color="k", ls=":", lw=0.8)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
