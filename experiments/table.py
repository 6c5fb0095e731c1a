"""Per-chain accuracies of finished runs, as the experiments/*.md tables print them.

    python experiments/table.py outputs/experiments/pn5-bn [more run dirs]
    python experiments/table.py multirun/fig3_cifar100-cpu      (a collected sweep: one line per net)

One line per run, measure and protocol: accuracy in % per chain (chain 1 first), then the overall
decision (H0 accepted only when every chain accepts) and the smallest / largest p-value.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def lines(run: Path) -> list[str]:
    rows = json.loads((run / "report.json").read_text())
    out = []
    for measure in dict.fromkeys(r["measure"] for r in rows):
        for protocol in dict.fromkeys(r["protocol"] for r in rows):
            sel = [r for r in rows if r["measure"] == measure and r["protocol"] == protocol]
            chains = [r for r in sel if r["chain"] != "all"]
            overall = next((r for r in sel if r["chain"] == "all"), None)
            if not chains:
                continue
            acc = " / ".join(f"{100 * r['accuracy']:.0f}" for r in chains)
            ps = [r["p_value"] for r in chains if r["p_value"] is not None]
            tail = f"overall {overall['decision']}" if overall else ""
            out.append(f"{run.name} | {measure} | {protocol} | {acc} | {tail} | p {min(ps):.3g}-{max(ps):.3g}")
    return out


def pct(v: str | None) -> str:
    return f"{100 * float(v):.0f}" if v else "—"


def paper_cell(gram: list[dict]) -> str:
    """The paper's chain values ("—" where it gives none; one number when all are the same), else its
    note (e.g. "about 98 %")."""
    values = [pct(r["paper"]) for r in gram]
    if set(values) != {"—"}:
        return values[0] if len(set(values)) == 1 else " / ".join(values)
    return next((r["paper_note"] for r in gram if r["paper_note"]), "—")


def collected_lines(sweep: Path) -> list[str]:
    """A collected sweep as table rows: net | protocol | chain Grams (mean over splits) per chain |
    raw layers | the paper's chain Grams | overall decision."""
    import csv

    rows = list(csv.DictReader(open(sweep / "collected" / "table.csv")))
    out = []
    for net in dict.fromkeys(r["net"] for r in rows):
        for protocol in dict.fromkeys(r["protocol"] for r in rows):
            sel = [r for r in rows if (r["net"], r["protocol"]) == (net, protocol)]
            gram = [r for r in sel if r["measure"] == "chain_gram" and r["chain"] != "all"]
            raw = [r for r in sel if r["measure"] == "raw" and r["chain"] != "all"]
            if not gram:
                continue
            overall = next(r["decision"] for r in sel if r["measure"] == "chain_gram" and r["chain"] == "all")
            ours = " | ".join(" / ".join(pct(r["ours_mean"]) for r in rs) for rs in (gram, raw))
            out.append(f"| {net} | {protocol} | {ours} | {paper_cell(gram)} | {overall} |")
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        path = Path(arg)
        print("\n".join(collected_lines(path) if (path / "collected").is_dir() else lines(path)))
