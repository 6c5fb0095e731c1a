"""Collect an Expand-and-Cluster multirun (weightsim-recover -m ...) into one table and one figure.

    python experiments/recover_sweep.py DIR [DIR ...] [--figure sweep.png]

Reads every <job>/report.json under the multirun directories; prints, per (activation, teacher's
hidden neurons, N, rho, preset), the mean over its runs (e.g. teacher seeds) as a Markdown table
and draws recovered fraction and size overhead against rho (weightsim.recover.plots.plot_sweep), by
default to <first DIR>/sweep.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from weightsim.recover.plots import plot_sweep, sweep_table
from weightsim.report.tables import markdown_table

COLUMNS = ["activation", "teacher_size", "n_students", "width_factor", "preset", "runs", "recovered_frac",
           "all_recovered", "overhead", "max_overhead", "median_weight_rel_err", "seconds"]


def main(args: list[str]) -> None:
    figure = args[args.index("--figure") + 1] if "--figure" in args else None
    roots = [a for i, a in enumerate(args) if a != "--figure" and (i == 0 or args[i - 1] != "--figure")]
    rows = [r for root in roots for f in sorted(Path(root).glob("*/report.json")) for r in json.loads(f.read_text())]
    if not rows:
        sys.exit(f"error: no */report.json under {' '.join(roots)}: pass multirun directories of weightsim-recover -m")
    print(markdown_table(sweep_table(rows), COLUMNS))
    print(f"\nfigure: {plot_sweep(rows, figure or Path(roots[0]) / 'sweep.png')}")


if __name__ == "__main__":
    main(sys.argv[1:])
