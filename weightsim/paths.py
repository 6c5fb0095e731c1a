"""Where the package's Hydra config tree (conf/) lies: a leaf that every room may import."""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).parent / "conf"  # installed wheel
if not CONF.is_dir():
    CONF = Path(__file__).parent.parent / "conf"  # source checkout / editable install
