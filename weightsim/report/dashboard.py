"""The paper's Fig. 4 (factors) and Fig. 5 (cross-network) from the wandb runs of a sweep, one
panel each (docs/wandb.md): per-chain accuracy of both protocols, bars grouped by the zoo's arch
(Fig. 4, same-zoo runs) or by train zoo arch -> eval zoo arch (Fig. 5, cross-network runs).

    python -m weightsim.report.dashboard multirun/2026-12-02/10-00-00          # offline runs under a dir
    python -m weightsim.report.dashboard --project ENTITY/weightsim --group G  # synced runs (network)
    python -m weightsim.report.dashboard DIR --by arch,zoo.seeds   # bars per choice / config value

Writes fig4_factors.png, fig5_cross.png and dashboard.json (the panel specs and the values drawn)
to --out. Works from the runs' summaries only (keys of weightsim/report/wandb_log.py), so the same
code draws offline runs and synced ones.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from weightsim.errors import DataError, WeightsimError

# the panels, as a spec: which runs, which summary values, grouped by which config key
PANELS = {
    "fig4_factors": {"title": "Fig. 4 - factors: per-chain accuracy by arch (same zoo)",
                     "runs": {"config.stage": ["htt", "run"], "config.cross": False},
                     "metric": r"^(classification|retrieval)/{measure}/chain_(\d+)/accuracy$",
                     "group_by": ["config.zoo_arch"]},
    "fig5_cross": {"title": "Fig. 5 - cross-network: per-chain accuracy, train zoo arch -> eval zoo arch",
                   "runs": {"config.stage": ["htt", "run"], "config.cross": True},
                   "metric": r"^(classification|retrieval)/{measure}/chain_(\d+)/accuracy$",
                   "group_by": ["config.zoo_arch", "config.eval_zoo_arch"]},
}


def lookup(run: dict, key: str):
    """``config.a.b`` or ``summary.x`` of a run dict (wandb_read's form)."""
    part, _, rest = key.partition(".")
    return run[part].get(rest) if part in ("config", "summary") else run.get(key)


MISSING = object()


def config_value(run: dict, key: str):
    """A run's value of ``key``: its Hydra choice (``arch``: the arch group's name), else the dotted
    path in its config (``zoo.seeds``); MISSING where the run has neither."""
    config = run["config"]
    if key in (config.get("choices") or {}):
        return config["choices"][key]
    if key in config:  # a flattened key (synced runs may carry "zoo.seeds" as one key)
        return config[key]
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def check_by(runs: list[dict], by: list[str]) -> None:
    """One line for a --by key that no run has, before anything is drawn."""
    for key in by:
        if all(config_value(run, key) is MISSING for run in runs):
            choices = sorted({c for run in runs for c in (run["config"].get("choices") or {})})
            raise WeightsimError(f"--by {key}: no run has this choice or config key; choices: {', '.join(choices)}, "
                                 "or a dotted config path such as zoo.seeds or protocol.alpha")


def group_label(run: dict, panel: dict, by: list[str] | None) -> str:
    """The bar group of a run: the panel's ``group_by`` values joined by " -> " (the arch, or train
    -> eval arch); with ``by``, key=value of each key instead (after train -> eval for Fig. 5)."""
    arches = " -> ".join(str(lookup(run, k)) for k in panel["group_by"])
    if not by:
        return arches
    values = {k: config_value(run, k) for k in by}
    label = ", ".join(f"{k}={'?' if v is MISSING else v}" for k, v in values.items())
    cross = len(panel["group_by"]) > 1  # Fig. 5: which nets were tested on which is the panel's point
    return f"{arches} ({label})" if cross else label


def panel_values(runs: list[dict], panel: dict, measure: str,
                 by: list[str] | None = None) -> dict[tuple[str, str, int], list[float]]:
    """{(protocol, group label, chain): [accuracy of each matching run]} of one panel spec; the
    label joins the run's ``group_by`` values with " -> ", or names the ``by`` keys' values."""
    pattern = re.compile(panel["metric"].format(measure=re.escape(measure)))
    values = defaultdict(list)
    for run in runs:
        if not all((lookup(run, k) in v) if isinstance(v, list) else lookup(run, k) == v
                   for k, v in panel["runs"].items()):
            continue
        group = group_label(run, panel, by)
        for key, value in run["summary"].items():
            m = pattern.match(key)
            if m and isinstance(value, (int, float)):
                values[(m.group(1), group, int(m.group(2)))].append(float(value))
    return dict(values)


def draw_panel(values: dict, title: str, path: Path) -> Path:
    """One axes: the protocols side by side, chains on x, one bar per group (mean over its runs,
    whisker = min..max), the runs' count in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    protocols = sorted({p for p, _, _ in values})
    groups = sorted({g for _, g, _ in values})
    bars = len({(p, c) for p, _, c in values})  # x positions: one per (protocol, chain)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * bars), 3.6))
    width, x0, ticks, labels = 0.8 / max(1, len(groups)), 0, [], []
    for p in protocols:
        chains = sorted({c for p2, _, c in values if p2 == p})
        for i, g in enumerate(groups):
            acc = [values.get((p, g, c), []) for c in chains]
            mean = [np.mean(a) if a else np.nan for a in acc]
            err = np.array([[m - min(a), max(a) - m] if a else [0, 0] for m, a in zip(mean, acc)]).T
            pos = x0 + np.arange(len(chains)) + (i - (len(groups) - 1) / 2) * width
            n = max(len(a) for a in acc)
            ax.bar(pos, mean, width, yerr=err, capsize=2, color=f"C{i}",
                   label=f"{g} ({n} run{'s' * (n != 1)})" if p == protocols[0] else None)
        ticks += list(x0 + np.arange(len(chains)))
        labels += [f"{p[:5]}.\n{c}" if c == chains[0] else str(c) for c in chains]
        x0 += len(chains) + 1
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_xlabel("protocol / chain")
    ax.set_ylabel("accuracy (top-1 / rank-1)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    fig.legend(fontsize=7, loc="lower center", ncol=min(3, len(groups)), frameon=False)
    fig.tight_layout(rect=(0, 0.06 * ((len(groups) + 2) // 3), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build(runs: list[dict], out: str | Path, measure: str = "chain_gram", by: list[str] | None = None) -> dict:
    """Draw every panel that has runs; returns (and writes as dashboard.json) the specs and values.
    by: group the bars by these choices / config keys instead of by arch."""
    check_by(runs, by or [])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"measure": measure, "runs": len(runs), "by": by, "panels": {}}
    for name, panel in PANELS.items():
        values = panel_values(runs, panel, measure, by)
        entry = {**panel, "values": [{"protocol": p, "group": g, "chain": c, "accuracy": v}
                                     for (p, g, c), v in sorted(values.items())]}
        if values:
            entry["png"] = str(draw_panel(values, panel["title"], out / f"{name}.png"))
        report["panels"][name] = entry
    (out / "dashboard.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> None:
    from weightsim.report.wandb_read import offline_runs, online_runs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs_dir", nargs="?", help="a directory holding offline wandb runs (a sweep dir)")
    ap.add_argument("--project", help="ENTITY/PROJECT: read synced runs through wandb's public API instead")
    ap.add_argument("--group", help="with --project: only the runs of this wandb group")
    ap.add_argument("--measure", default="chain_gram", help="the measure drawn (protocol.measures)")
    ap.add_argument("--out", default="dashboard", help="folder for the PNGs and dashboard.json")
    ap.add_argument("--by", help="group the bars by these Hydra choices or config keys, comma-separated "
                                 "(e.g. arch,zoo.seeds); default: by the zoo's arch")
    args = ap.parse_args(argv)
    if bool(args.runs_dir) == bool(args.project):
        ap.error("give a runs directory or --project ENTITY/PROJECT (one of them)")
    runs = (online_runs(args.project, {"group": args.group} if args.group else None) if args.project
            else offline_runs(args.runs_dir))
    if not runs:
        raise DataError(f"no wandb runs found in {args.runs_dir or args.project}: run the sweep with logger=wandb")
    report = build(runs, args.out, args.measure, [k for k in (args.by or '').split(',') if k] or None)
    for name, panel in report["panels"].items():
        where = f" -> {panel['png']}" if "png" in panel else " (no matching runs)"
        print(f"{name}: {len(panel['values'])} bars{where}")
    print(f"{Path(args.out) / 'dashboard.json'}")


if __name__ == "__main__":
    try:
        main()
    except WeightsimError as e:  # one line for bad input, exit 2, as the other commands
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
