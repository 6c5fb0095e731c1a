"""Collect an Expand-and-Cluster multirun (weightsim-recover -m ...) into one table and one figure.

    python experiments/recover_sweep.py multirun/recover/<date>/<time> [figure.png]

Reads every <job>/report.json under the directory; prints the overall row of each (activation, N,
rho, preset) as a Markdown table and draws recovered fraction and size overhead against rho
(weightsim.recover.plots.plot_sweep), by default to <dir>/sweep.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from weightsim.recover.plots import plot_sweep
from weightsim.report.tables import markdown_table

COLUMNS = ["activation", "n_students", "width_factor", "preset", "teacher_size", "size", "overhead",
           "recovered_frac", "max_nearest_dist", "weight_rel_err", "excess", "final_mse", "seconds"]


def main(root: str, figure: str | None = None) -> None:
    rows = [r for f in sorted(Path(root).glob("*/report.json")) for r in json.loads(f.read_text())]
    if not rows:
        sys.exit(f"error: no */report.json under {root}: pass the multirun directory of weightsim-recover -m")
    overall = sorted((r for r in rows if r["layer"] == "all"),
                     key=lambda r: (r["activation"], r["n_students"], r["width_factor"], r["preset"]))
    print(markdown_table(overall, COLUMNS))
    print(f"\nfigure: {plot_sweep(rows, figure or Path(root) / 'sweep.png')}")


if __name__ == "__main__":
    main(*sys.argv[1:])
