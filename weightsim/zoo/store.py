"""On-disk model zoo: safetensors weights + a manifest, written atomically.

Layout of a zoo directory::

    zoo.json                      what the zoo is: dataset, tasks, arch, training config (+ hash)
    weights/<population>.safetensors   stacked parameters, each tensor (K, *shape), member axis first
    weights/<population>.json     the manifest rows of its K nets (task, seed, accuracies, sha256, ...)

A population's .safetensors is written (temp file, fsync, rename) before its .json; the .json is
the completion mark, so a crash never leaves a manifest row without its weights. The manifest of
the zoo is the union of the .json pieces (several jobs can fill one zoo without sharing a file);
``manifest.csv`` is a derived, human-readable copy.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load, save as st_save

from weightsim.errors import ZooError
from weightsim.files import atomic_write

FORMAT = "weightsim-zoo"
VERSION = 1
# what must agree between a zoo on disk and the config that wants to add to it
IDENTITY_KEYS = ("dataset", "arch", "training")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inside_weights(name: str) -> bool:
    """A manifest's file name names a file directly in weights/ (no path separators, no leading dot)."""
    return "/" not in name and "\\" not in name and not name.startswith(".")


def looks_like_pickle(data: bytes) -> bool:
    """A torch.save zip ('PK') or a pickle of protocol 2-5 (0x80 then the protocol byte); needs the
    first 2 bytes. Only meaningful for bytes that failed the safetensors structure check."""
    return data[:2] == b"PK" or (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def check_safetensors_bytes(data: bytes, path: Path) -> None:
    """Refuse anything that is not a safetensors file (pickles, torch.save zips) before parsing it.

    A safetensors file is an 8-byte little-endian header length n, then n bytes of JSON starting
    with '{', then the tensor data. The structure is checked first: its first byte can be 0x80
    (a header length of 128 mod 256), so a leading 0x80 alone does not make a file a pickle.
    """
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if len(data) >= 10 and 2 <= n <= len(data) - 8 and data[8:9] == b"{":
        return
    if looks_like_pickle(data):
        raise ZooError(f"zoo file {path} is not a safetensors file: it looks like a pickle / torch.save "
                       f"file, refused (weightsim reads weights only from safetensors, so a zoo cannot run code)")
    raise ZooError(f"zoo file {path} is not a safetensors file (truncated or foreign)")


@contextmanager
def zoo_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the zoo at ``root`` (POSIX ``flock`` on ``root/.lock``) while a job
    reads what is on disk and adds to it; concurrent jobs on one zoo take turns. Where there is no
    flock (Windows) it does nothing."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(root / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class ZooWriter:
    """Creates or reopens a zoo directory and adds populations to it atomically."""

    def __init__(self, root: str | Path, identity: dict):
        self.root = Path(root)
        (self.root / "weights").mkdir(parents=True, exist_ok=True)
        head = self.root / "zoo.json"
        self.identity = {"format": FORMAT, "version": VERSION, **identity}
        if head.exists():
            check_identity(self.root, read_head(head), self.identity)
        else:
            atomic_write(head, json.dumps(self.identity, indent=1).encode())

    def done(self) -> set[str]:
        """Names of the populations already complete on disk."""
        return {p.stem for p in (self.root / "weights").glob("*.json")}

    def done_nets(self) -> set[tuple[int, int]]:
        """(task, seed) of every net already complete on disk (its manifest piece exists)."""
        return {(r["task"], r["seed"]) for r in read_pieces(self.root)}

    def write(self, name: str, stacked: dict[str, torch.Tensor], rows: list[dict]) -> int:
        """Write one population: stacked (K, ...) tensors and its K manifest rows; returns how many
        nets it added.

        Under the zoo's lock, nets that another job has written meanwhile (seed blocks of concurrent
        jobs that overlap) are left out, so the zoo never holds a net twice; a population whose
        nets are all on disk already adds nothing.
        """
        with zoo_lock(self.root):
            done = self.done_nets()
            keep = [i for i, r in enumerate(rows) if (r["task"], r["seed"]) not in done]
            if len(keep) < len(rows):
                if not keep:
                    return 0
                idx = torch.tensor(keep)
                stacked = {k: v.index_select(0, idx.to(v.device)) for k, v in stacked.items()}
                rows = [rows[i] for i in keep]
            while (self.root / "weights" / f"{name}.json").exists():  # a piece of that name holds other nets
                name += "+"
            self._write(name, stacked, rows)
        return len(rows)

    def _write(self, name: str, stacked: dict[str, torch.Tensor], rows: list[dict]) -> None:
        # one metadata entry: safetensors writes a multi-key metadata map in hash order, which would
        # make the bytes differ from run to run
        data = st_save({k: v.detach().cpu().contiguous() for k, v in stacked.items()},
                       metadata={FORMAT: json.dumps({"population": name, "version": VERSION})})
        wpath = self.root / "weights" / f"{name}.safetensors"
        atomic_write(wpath, data)
        digest = sha256_bytes(data)
        rows = [{**r, "file": wpath.name, "index": i, "sha256": digest, "bytes": len(data)}
                for i, r in enumerate(rows)]
        atomic_write(self.root / "weights" / f"{name}.json", json.dumps(rows, indent=0).encode())

    def write_manifest_csv(self) -> Path:
        return ZooReader(self.root).write_manifest_csv()


def read_head(path: Path) -> dict:
    try:
        head = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ZooError(f"zoo file {path} is unreadable or not JSON ({e})") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ZooError(f"{path} is not a weightsim zoo header (missing format: {FORMAT})")
    return head


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) < 160 else s[:157] + "..."


def _describe(key: str, v, other) -> str:
    """'arch mlp (hidden=32)': the name, then the config entries that differ from ``other``."""
    if not isinstance(v, dict):
        return f"{key}={_short(v)}"
    name = v.get("name")
    cfg, ocfg = v.get("config", v), (other or {}).get("config", other or {})
    diff = {k: cfg.get(k) for k in sorted(set(cfg) | set(ocfg)) if k != "name" and cfg.get(k) != ocfg.get(k)}
    if not diff and isinstance(other, dict) and v.get("fingerprint") != other.get("fingerprint"):
        diff = {"data fingerprint": v.get("fingerprint")}  # same options, other data (e.g. a partial copy)
    return f"{key} '{name}' ({_short(diff)[1:-1] or 'same options'})" if name else f"{key}={_short(diff)}"


def check_identity(root: Path, old: dict, new: dict) -> None:
    """Refuse to add to a zoo made for another dataset, architecture or training config."""
    for key in IDENTITY_KEYS:
        if old.get(key) != new.get(key):
            raise ZooError(f"zoo {root} was made for {_describe(key, old.get(key), new.get(key))}, but the "
                           f"config asks for {_describe(key, new.get(key), old.get(key))}: refused (nets of "
                           f"both would mix); use another zoo_dir, or the zoo's own config")


def read_pieces(root: Path) -> list[dict]:
    """All manifest rows of the zoo at ``root`` (the union of weights/*.json), unsorted."""
    rows = []
    for piece in sorted((Path(root) / "weights").glob("*.json")):
        try:
            part = json.loads(piece.read_text())
        except (OSError, ValueError) as e:
            raise ZooError(f"zoo manifest piece {piece} is corrupt ({e})") from None
        if not isinstance(part, list) or not all(isinstance(r, dict) and {"task", "seed", "file"} <= set(r)
                                                 for r in part):
            raise ZooError(f"zoo manifest piece {piece} is not a list of manifest rows")
        rows.extend({**r, "_piece": piece.name} for r in part)
    return rows


class ZooReader:
    """Reads a zoo directory: its header, its manifest rows, and its weights (safetensors only)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ZooError(f"zoo directory {self.root} does not exist: train one with "
                           f"`weightsim-zoo zoo_dir={self.root}` or pass the right zoo_dir=")
        head = self.root / "zoo.json"
        if not head.exists():
            raise ZooError(f"{self.root} is not a zoo (no zoo.json): pass the directory weightsim-zoo wrote")
        self.head = read_head(head)
        self.rows = self._read_rows()
        # the last file parsed: batches that stream through one population file read it once
        self._last: tuple[str, dict[str, torch.Tensor]] | None = None

    def _read_rows(self) -> list[dict]:
        rows, seen = [], {}
        for r in read_pieces(self.root):
            key = (r["task"], r["seed"])
            if key in seen:
                raise ZooError(f"zoo {self.root} holds net task={key[0]} seed={key[1]} twice (in "
                               f"weights/{seen[key]} and weights/{r['_piece']}): remove one piece; "
                               f"`weightsim-zoo verify zoo_dir={self.root}` lists all problems")
            seen[key] = r.pop("_piece")
            rows.append(r)
        rows.sort(key=lambda r: (r["task"], r["seed"]))
        return rows

    def load(self, rows: list[dict] | None = None, verify: bool = False) -> dict[str, torch.Tensor]:
        """Stacked parameters of ``rows`` (default: all), in their order: name -> (N, *shape)."""
        rows = self.rows if rows is None else rows
        if not rows:
            raise ZooError(f"zoo {self.root} has no trained nets yet")
        by_file: dict[str, dict[str, torch.Tensor]] = {}
        for f in dict.fromkeys(r["file"] for r in rows):
            by_file[f] = self.load_file(f, verify_sha=next(r["sha256"] for r in rows if r["file"] == f)
                                        if verify else None)
        keys = list(next(iter(by_file.values())))
        return {k: torch.stack([by_file[r["file"]][k][r["index"]] for r in rows]) for k in keys}

    def load_file(self, name: str, verify_sha: str | None = None) -> dict[str, torch.Tensor]:
        """The tensors of weights/``name`` (read-only use). A checksum check always reads the file."""
        if verify_sha is None and self._last is not None and self._last[0] == name:
            return self._last[1]
        path = self.root / "weights" / name
        if not inside_weights(name):
            raise ZooError(f"zoo {self.root}: the manifest names {name!r}, outside weights/: refused")
        if not name.endswith(".safetensors"):
            raise ZooError(f"zoo file {path} is not a .safetensors file: refused (no pickles)")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ZooError(f"zoo file {path} is missing or unreadable ({e.strerror})") from None
        if verify_sha is not None and sha256_bytes(data) != verify_sha:
            raise ZooError(f"zoo file {path} does not match its manifest checksum (altered or truncated)")
        check_safetensors_bytes(data, path)
        try:
            tensors = st_load(data)
        except (SafetensorError, ValueError) as e:
            raise ZooError(f"zoo file {path} is corrupt ({e})") from None
        self._last = (name, tensors)
        return tensors

    def write_manifest_csv(self) -> Path:
        path = self.root / "manifest.csv"
        if self.rows:
            keys = list(dict.fromkeys(k for r in self.rows for k in r))
            buf = io.StringIO()
            w = csv.DictWriter(buf, keys)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
            atomic_write(path, buf.getvalue().encode())
        return path
