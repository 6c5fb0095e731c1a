"""Where the Hydra config tree (conf/) lies and which choices each config group offers: read by
the CLI, the benchmarks and anyone else, so that none of them imports the CLI for it."""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).parent / "conf"  # installed wheel
if not CONF.is_dir():
    CONF = Path(__file__).parent.parent / "conf"  # source checkout / editable install


def choices(group: str) -> list[str]:
    """The options of config group ``group`` (e.g. "arch"): the names of conf/<group>/*.yaml, sorted."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))
