"""Writing files so that a crash never leaves half of one: zoo files, caches, and every CSV table
of the package (``write_csv``: the one CSV writer)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``data`` (bytes, or a function that writes to the open file) to ``path`` so that
    readers see the old file or the whole new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data) if isinstance(data, bytes) else data(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """``rows`` as CSV text: a header of ``columns`` (default: every key of the rows, in the order
    they first appear), then one line per row; a key a row lacks is an empty cell."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns if columns is not None else list(dict.fromkeys(k for r in rows for k in r)))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Write ``csv_text(rows, columns)`` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write(path, csv_text(rows, columns).encode())
    return path
