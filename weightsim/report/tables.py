"""Result tables: every result row is written as JSON and CSV; the Markdown table is for people."""

from __future__ import annotations

import csv
import json
from pathlib import Path

COLUMNS = ["protocol", "chain", "normalized", "accuracy", "error", "alpha", "decision",
           "error_ci_high", "p_value", "feature_dim", "n"]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return "" if v is None else str(v)


def markdown_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def run_section(meta: dict) -> list[str]:
    """The run's facts as Markdown: scalars as a list, the per-chain feature plan as a table
    (the whole config stays in run.json and .hydra/)."""
    lines = [f"- {k}: {v}" for k, v in meta.items() if not isinstance(v, (dict, list))]  # warnings: own section
    feats = meta.get("features", {})
    for kind in ("normalized", "raw"):
        if kind in feats:
            lines.append(f"- {kind} features: {feats[kind]}")
    if feats.get("options"):
        lines.append("- chain options: " + ", ".join(f"{k}={v}" for k, v in feats["options"].items()))
    plan = feats.get("chains") or []
    if plan:
        cols = list(dict.fromkeys(k for r in plan for k in r))
        lines += ["", "Per chain, how its features were made:", "", markdown_table(plan, cols)]
    return lines


def write_report(run_dir: str | Path, result: dict, title: str = "weightsim report") -> dict[str, Path]:
    """Write report.json (the rows), report.csv, cmc.csv, run.json (the meta) and report.md."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows, meta = result["rows"], result["meta"]
    paths = {"json": run_dir / "report.json", "csv": run_dir / "report.csv", "md": run_dir / "report.md",
             "meta": run_dir / "run.json", "cmc": run_dir / "cmc.csv"}
    paths["json"].write_text(json.dumps(rows, indent=1))
    paths["meta"].write_text(json.dumps(meta, indent=1, default=str))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    with open(paths["cmc"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["chain", "kind", "rank", "cmc"])
        for (chain, kind), curve in sorted(result["cmc"].items()):
            w.writerows([chain, kind, k + 1, float(v)] for k, v in enumerate(curve))
    md = [f"# {title}", "", markdown_table(rows), "",
          "Decision: accept H0 (the seeds' solutions form one class) when error < alpha. "
          "`error_ci_high`: upper Clopper-Pearson bound on the error; `p_value`: label-permutation null "
          "(accuracy above chance).", "", "## Run", ""]
    if meta.get("warnings"):
        md += ["## Warnings", ""] + [f"- {w}" for w in meta["warnings"]] + [""]
    md += run_section(meta)
    md += ["", "Plots: `accuracy.png` (per-chain accuracy, normalized vs raw), `cmc.png` (CMC curves)."]
    paths["md"].write_text("\n".join(md) + "\n")
    return paths
