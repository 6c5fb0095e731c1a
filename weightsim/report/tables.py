"""Result tables: every result row is written as JSON and CSV; the Markdown table is for people.
``write_run`` writes the report files of every stage (HTT, compare, recover)."""

from __future__ import annotations

import json
from pathlib import Path

from weightsim.files import write_csv

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


def write_run(run_dir: str | Path, rows: list[dict], meta: dict, markdown: list[str],
              plots: dict[Path, str] | None = None, tables: dict[str, list[dict]] | None = None,
              columns: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """Every stage's report files in ``run_dir``: report.json (the rows), report.csv, run.json (the
    meta), ``<name>.csv`` for each of ``tables`` (header ``columns[name]`` where given, else the rows'
    keys), and report.md: the ``markdown`` lines, then one line naming the ``plots`` the stage wrote
    ({path: what it shows}). Returns the paths: json, csv, meta, md and each table's name."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": run_dir / "report.json", "csv": run_dir / "report.csv", "md": run_dir / "report.md",
             "meta": run_dir / "run.json"}
    paths["json"].write_text(json.dumps(rows, indent=1))
    paths["meta"].write_text(json.dumps(meta, indent=1, default=str))
    write_csv(paths["csv"], rows)
    for name, table in (tables or {}).items():
        paths[name] = write_csv(run_dir / f"{name}.csv", table, (columns or {}).get(name))
    md = list(markdown)
    if plots:
        md += ["", "Plots: " + ", ".join(f"`{Path(p).name}` ({what})" for p, what in plots.items()) + "."]
    paths["md"].write_text("\n".join(md) + "\n")
    return paths


def write_report(run_dir: str | Path, result: dict, title: str = "weightsim report",
                 plots: dict[Path, str] | None = None, tables: dict[str, list[dict]] | None = None) -> dict[str, Path]:
    """An HTT result's report (``write_run``): report.json / .csv / .md, run.json, cmc.csv (chain,
    measure, rank, cmc) and ``<name>.csv`` for each of ``tables``; ``plots``: {path: what it shows}
    of the plots written beside it."""
    rows, meta = result["rows"], result["meta"]
    cmc = [{"chain": chain, "measure": measure, "rank": k + 1, "cmc": float(v)}
           for (chain, measure), curve in sorted(result["cmc"].items()) for k, v in enumerate(curve)]
    md = [f"# {title}", "", markdown_table(rows), ""] + legend(rows, meta) + [""]
    if meta.get("warnings"):
        md += ["## Warnings", ""] + [f"- {w}" for w in meta["warnings"]] + [""]
    md += ["## Run", ""] + run_section(meta)
    return write_run(run_dir, rows, meta, md, plots, {"cmc": cmc, **(tables or {})},
                     {"cmc": ["chain", "measure", "rank", "cmc"]})
