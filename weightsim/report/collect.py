"""weightsim-collect: an experiment sweep's HTT runs gathered into one table and one figure, with
the paper's numbers beside ours in every cell.

Reads ``<sweep dir>/sweep.json`` (written after the jobs by weightsim/sweep.py) and each HTT run's
report.json; writes ``<sweep dir>/collected/``: ``table.csv`` (every row of every run), ``table.md``
(the same for people) and ``figure.png`` (per-chain bars, the paper's values as black marks).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from weightsim.errors import WeightsimError  # noqa: E402
from weightsim.files import write_csv  # noqa: E402
from weightsim.report.paper import LAYOUT, paper_value  # noqa: E402
from weightsim.sweep import SWEEP_FILE  # noqa: E402

COLUMNS = ["net", "variant", "protocol", "measure", "chain", "paper_chain", "ours", "ours_mean", "ours_sd", "paper",
           "paper_note", "error_upper_bound", "p_value", "decision", "decision_bound", "effect_size", "n",
           "steps", "train_loss", "train_acc", "test_acc", "run"]
NETS = ("steps", "train_loss", "train_acc", "test_acc")  # the task nets' record beside every HTT number


def net_label(run: dict) -> str:
    """The net a run tested: its arch, or "<train arch>-><eval arch>" for a cross-network run."""
    return f"{run['train_arch']}->{run['eval_arch']}" if run.get("eval_zoo_dir") else run["train_arch"]


def variant_label(run: dict) -> str:
    """What else the run varied, for sweeps over HTT options (e.g. ``chains.bn=ignore``), without the arch."""
    return ",".join(p for p in (run.get("variant") or "").split(",") if p and not p.startswith("arch="))


def collected_rows(sweep_dir: Path) -> tuple[str | None, list[dict]]:
    """(experiment name, one row per (net, protocol, measure, chain) of every successful HTT run)."""
    path = sweep_dir / SWEEP_FILE
    if not path.is_file():
        raise WeightsimError(f"{path} not found: weightsim-collect reads the sweep dir of an experiment run "
                             "with -m (e.g. weightsim-run -m experiment=fig3_cifar100), after its jobs")
    sweep = json.loads(path.read_text())
    experiment, out = sweep.get("experiment"), []
    for run in sweep["htt"]:
        report = sweep_dir / run["run_dir"] / "report.json"
        if run["status"] != "ok" or not report.is_file():
            continue
        net, variant = net_label(run), variant_label(run)
        meta = sweep_dir / run["run_dir"] / "run.json"
        nets = (json.loads(meta.read_text()).get("task_nets") or {}) if meta.is_file() else {}
        for r in json.loads(report.read_text()):
            paper = paper_value(experiment, net, r["protocol"], r["measure"], r["chain"]) or {}
            out.append({"net": f"{net} {variant}".strip(), "variant": variant, "protocol": r["protocol"], "measure": r["measure"], "chain": r["chain"],
                        "paper_chain": paper.get("paper_chain", ""), "ours": r["accuracy"],
                        "ours_mean": r.get("accuracy_mean"), "ours_sd": r.get("accuracy_sd"),
                        "paper": paper.get("value"), "paper_note": paper.get("note", ""),
                        "error_upper_bound": r.get("error_upper_bound"), "p_value": r.get("p_value"),
                        "decision": r.get("decision"), "decision_bound": r.get("decision_bound"),
                        "effect_size": r.get("effect_size"), "n": r.get("n"),
                        **{k: nets.get(k) for k in NETS}, "run": run["run_dir"]})
    if not out:
        raise WeightsimError(f"no finished HTT run in {path}: rerun the sweep's command to complete it")
    return experiment, out


def pct(v) -> str:
    return "" if v is None or v == "" else f"{100 * float(v):.1f}"


def markdown(experiment: str | None, rows: list[dict]) -> str:
    """The collected table: ours (fixed split; mean ± sd over splits) beside the paper's, per cell."""
    lines = [f"# {experiment or 'sweep'}: ours beside the paper", "",
             "Accuracy in % (classification: top-1 on held-out seeds; retrieval: rank-1 on unseen tasks). "
             "ours: the paper's fixed seed split; mean ± sd over the repeated splits; bound: one-sided "
             "upper bound on the error; decision: H0 accepted when the error < alpha.", "",
             "| net | protocol | measure | chain | ours | mean ± sd | paper | error bound | p | decision |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        chain = f"{r['chain']} (paper {r['paper_chain']})" if r["paper_chain"] not in ("", r["chain"]) else r["chain"]
        paper = pct(r["paper"]) or "—"
        if r["paper_note"]:
            paper = f"{paper} ({r['paper_note']})" if r["paper"] is not None else r["paper_note"]
        sd = "" if r["ours_sd"] is None else f"{pct(r['ours_mean'])} ± {pct(r['ours_sd'])}"
        p = "" if r["p_value"] is None else f"{r['p_value']:.3g}"
        lines.append(f"| {r['net']} | {r['protocol']} | {r['measure']} | {chain} | {pct(r['ours'])} | {sd} | "
                     f"{paper} | {pct(r['error_upper_bound'])} | {p} | {r['decision']} |")
    nets = {r["net"]: r for r in rows if any(r.get(k) is not None for k in NETS)}
    if nets:
        lines += ["", "The task nets tested (usable nets of the training zoo; mean over them):", "",
                  "| net | SGD steps | train loss | train acc | test acc |", "|---|---|---|---|---|"]
        num = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        for net, r in nets.items():
            lines.append(f"| {net} | {r['steps'] if r['steps'] is not None else ''} | {num(r['train_loss'], '.3g')} | "
                         f"{pct(r['train_acc'])} | {pct(r['test_acc'])} |")
    return "\n".join(lines) + "\n"


def panels(experiment: str | None, rows: list[dict]) -> list[tuple[str, list[dict], str]]:
    """(title, rows, series key) per panel: by net and protocol with the measures as series, or (layout
    "nets") by protocol with the nets as series, chain Grams only."""
    rows = [r for r in rows if r["chain"] != "all"]
    cross = {r["net"].split("->")[0] for r in rows if "->" in r["net"]}
    if cross:  # a cross-network sweep: the classifier's own net beside the nets it was tested on
        rows = [r for r in rows if "->" in r["net"] or r["net"] in cross]
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    if LAYOUT.get(experiment or "") == "nets":
        return [(p, [r for r in rows if r["protocol"] == p and r["measure"] == "chain_gram"], "net")
                for p in protocols]
    nets = list(dict.fromkeys(r["net"] for r in rows))
    return [(f"{n}: {p}", [r for r in rows if r["net"] == n and r["protocol"] == p], "measure")
            for n in nets for p in protocols]


def plot(experiment: str | None, rows: list[dict], path: Path) -> Path:
    """Per-chain bars (mean ± sd over seed splits) per panel; the paper's values as black marks."""
    spec = [p for p in panels(experiment, rows) if p[1]]
    cols = 2 if len(spec) > 1 else 1
    fig, axes = plt.subplots((len(spec) + cols - 1) // cols, cols, figsize=(7.0 * cols, 3.2 * ((len(spec) + 1) // 2)),
                             squeeze=False)
    for ax, (title, sel, key) in zip(axes.flat, spec):
        chains = sorted({r["chain"] for r in sel})
        series = list(dict.fromkeys(r[key] for r in sel))
        width, x = 0.8 / len(series), np.arange(len(chains))
        for i, s in enumerate(series):
            pick = {r["chain"]: r for r in sel if r[key] == s}
            pos = x + (i - (len(series) - 1) / 2) * width
            mean = [pick[c]["ours_mean"] if c in pick else np.nan for c in chains]
            sd = [(pick[c]["ours_sd"] or 0.0) if c in pick else 0.0 for c in chains]
            ax.bar(pos, mean, width, yerr=sd, capsize=2, color=plt.cm.tab10(i % 10), label=s)
            paper = [pick[c]["paper"] if c in pick and pick[c]["paper"] is not None else np.nan for c in chains]
            if not np.isnan(paper).all():
                ax.plot(pos, paper, "k_", ms=12, mew=2, label="paper" if i == 0 else None)
        ax.set_xticks(x, [str(c) for c in chains])
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("chain")
        ax.set_ylabel("top-1" if "classification" in title else "rank-1")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    for ax in list(axes.flat)[len(spec):]:
        ax.axis("off")
    fig.suptitle(f"{experiment or 'sweep'}: ours (bars, mean ± sd over seed splits), paper (black marks)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def numeric_setting(rows: list[dict]) -> str | None:
    """The one setting a sweep varies over numbers (e.g. ``protocol.train_seeds``), or None."""
    pairs = [v.split("=") for v in {r["variant"] for r in rows}]  # each variant a single "key=value"?
    if len(pairs) < 2 or any(len(kv) != 2 for kv in pairs) or len({k for k, _ in pairs}) > 1:
        return None
    try:
        [float(v) for _, v in pairs]
    except ValueError:
        return None
    return pairs[0][0]


def plot_curve(experiment: str | None, rows: list[dict], setting: str, path: Path) -> Path:
    """Accuracy against the swept setting, one line per chain (chain Grams solid, raw layers dashed),
    one panel per net and protocol; error bars: sd over seed splits."""
    rows = [r for r in rows if r["chain"] != "all"]
    arch = lambda r: r["net"].split(" ")[0]  # noqa: E731
    keys = list(dict.fromkeys((arch(r), r["protocol"]) for r in rows))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.4), squeeze=False)
    for ax, (net, proto) in zip(axes[0], keys):
        sel = [r for r in rows if arch(r) == net and r["protocol"] == proto]
        chains = sorted({r["chain"] for r in sel})
        for measure, style in (("chain_gram", "-o"), ("raw", "--x")):
            for c in chains:
                pts = sorted((float(r["variant"].partition("=")[2]), r["ours_mean"], r["ours_sd"] or 0.0)
                             for r in sel if r["chain"] == c and r["measure"] == measure)
                if pts:
                    x, y, e = zip(*pts)
                    ax.errorbar(x, y, yerr=e, fmt=style, ms=4, capsize=2, color=plt.cm.viridis(c / (len(chains) + 1)),
                                label=f"{'chain' if measure == 'chain_gram' else 'raw'} {c}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(setting)
        ax.set_ylabel("top-1" if proto == "classification" else "rank-1")
        ax.set_title(f"{net}: {proto}", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{experiment or 'sweep'}: accuracy against {setting} (mean ± sd over seed splits)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def collect(sweep_dir: str | Path) -> dict[str, Path]:
    """Write ``<sweep_dir>/collected/{table.csv, table.md, figure.png}`` (and ``curve.png`` when the
    sweep varied one numeric setting); returns their paths."""
    sweep_dir = Path(sweep_dir)
    experiment, rows = collected_rows(sweep_dir)
    out = sweep_dir / "collected"
    out.mkdir(exist_ok=True)
    paths = {"csv": out / "table.csv", "md": out / "table.md", "png": out / "figure.png"}
    write_csv(paths["csv"], rows, COLUMNS)
    paths["md"].write_text(markdown(experiment, rows))
    plot(experiment, rows, paths["png"])
    setting = numeric_setting(rows)
    if setting:
        paths["curve"] = plot_curve(experiment, rows, setting, out / "curve.png")
    return paths
