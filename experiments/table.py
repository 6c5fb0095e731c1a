"""Per-chain accuracies of finished runs, as the experiments/*.md tables print them.

    python experiments/table.py outputs/experiments/pn5-bn [more run dirs]

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


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print("\n".join(lines(Path(arg))))
