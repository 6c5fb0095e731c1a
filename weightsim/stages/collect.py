"""The collect stage (weightsim-collect, and the end of a sweep with sweep.collect=true): an
experiment sweep's HTT runs gathered into one table and figure (weightsim/report/collect.py)."""

from __future__ import annotations

from pathlib import Path


def collect_stage(sweep_dir: str | Path) -> dict[str, Path]:
    """Collect ``sweep_dir`` into ``<sweep_dir>/collected/`` and print the table; returns the paths."""
    from weightsim.report.collect import collect

    paths = collect(Path(sweep_dir))
    print(Path(paths["md"]).read_text())
    print(f"collected: {paths['md'].parent}")
    return paths
