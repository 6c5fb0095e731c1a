"""Result tables: every result row is written as JSON and CSV; the Markdown table is for people."""

from __future__ import annotations

import csv
import json
from pathlib import Path

COLUMNS = ["protocol", "measure", "chain", "accuracy", "accuracy_mean_sd", "effect_size", "error",
           "error_upper_bound", "decision", "decision_bound", "p_value", "feature_dim", "n"]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 or v != v or abs(v) == float("inf") else f"{v:.2e}"
    return "" if v is None else str(v)


def _cell(row: dict, column: str) -> str:
    if column == "accuracy_mean_sd":  # mean +- sd of the accuracy over the repeated seed splits
        mean, sd = row.get("accuracy_mean"), row.get("accuracy_sd")
        return "" if mean is None else f"{mean:.3f}" + ("" if sd is None else f" ± {sd:.3f}")
    return _fmt(row.get(column))


def markdown_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def legend(rows: list[dict], meta: dict) -> list[str]:
    """What each column of the table is, in the words of this run's settings (Markdown lines)."""
    alpha = rows[0]["alpha"] if rows else 1 - meta.get("bound_level", 0.95)
    level = meta.get("bound_level", 1 - alpha)
    return [
        "- `accuracy`: top-1 of the weight classifier on the held-out seeds (classification) or rank-1 of the "
        "CMC on the unseen tasks (retrieval), on the paper's fixed split (lowest seeds train / are queries).",
        f"- `accuracy_mean_sd`: mean ± sd of the accuracy over {meta.get('repeats', 1)} seed split(s): split 0 "
        "the fixed one, the others seeded random splits with the same counts per task.",
        "- `effect_size`: mean distance between nets of different tasks / mean distance between distinct nets "
        "of the same task, in the representation the protocol ranks by (the classifier's logits of the tested "
        "nets, with the protocol's metric); range [0, inf), 1 = tasks no farther apart than seeds of one task.",
        f"- `error` = 1 - accuracy; `error_upper_bound`: one-sided Clopper-Pearson upper bound on the error at "
        f"level {level:g} = 1 - alpha (`bound_level`).",
        f"- `decision`: the paper's, accept H0 (the seeds' solutions of a task form one class) when error < "
        f"alpha = {alpha:g}; `decision_bound`: accept only when error_upper_bound < alpha.",
        "- `p_value` = (1 + #{null >= observed}) / (1 + P), the null being no task information: classification, "
        f"{meta.get('null_classification', 'label-permutation null')}; retrieval, "
        f"{meta.get('null_retrieval', 'gallery-label permutations')}.",
        "- `n`: tested nets (classification) or queries (retrieval); `feature_dim`: features per net.",
        "- chain `all`: the paper's Algorithm 1, accept H0 only when every chain accepts; the worst chain's "
        "accuracy (and mean), effect size, error and bound, and the largest p-value.",
    ]


def run_section(meta: dict) -> list[str]:
    """The run's facts as Markdown: scalars as a list, the per-chain feature plan as a table
    (the whole config stays in run.json and .hydra/)."""
    lines = [f"- {k}: {v}" for k, v in meta.items() if not isinstance(v, (dict, list))]  # warnings: own section
    for name, m in meta.get("measures", {}).items():
        lines.append(f"- measure {name}: {m.get('features', '')}")
        if m.get("options"):
            lines.append(f"- {name} options: " + ", ".join(f"{k}={v}" for k, v in m["options"].items()))
    for name, m in meta.get("measures", {}).items():
        plan = m.get("chains") or []
        if plan:
            cols = list(dict.fromkeys(k for r in plan for k in r))
            lines += ["", f"Per chain, how the {name} features were made:", "", markdown_table(plan, cols)]
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
        w.writerow(["chain", "measure", "rank", "cmc"])
        for (chain, measure), curve in sorted(result["cmc"].items()):
            w.writerows([chain, measure, k + 1, float(v)] for k, v in enumerate(curve))
    md = [f"# {title}", "", markdown_table(rows), ""] + legend(rows, meta) + [""]
    if meta.get("warnings"):
        md += ["## Warnings", ""] + [f"- {w}" for w in meta["warnings"]] + [""]
    md += ["## Run", ""] + run_section(meta)
    md += ["", "Plots: `accuracy.png` (per-chain accuracy, one bar per measure), `cmc.png` (CMC curves)."]
    paths["md"].write_text("\n".join(md) + "\n")
    return paths
