"""On-disk model zoo: safetensors weights + a manifest, written atomically.

Layout of a zoo directory::

    zoo.json                      what the zoo is: dataset, tasks, arch, training config (+ hash)
    weights/<population>.safetensors   stacked parameters, each tensor (K, *shape), member axis first
    weights/<population>.json     the manifest rows of its K nets (task, seed, accuracies, sha256, ...)

A population's .safetensors is written (temp file, fsync, rename) before its .json; the .json is
the completion mark, so a crash never leaves a manifest row without its weights. It is streamed:
the header is built from the shapes, then each tensor is converted to the zoo's storage dtype
(float32, bfloat16 or float16) and written a block of members at a time, hashed as it goes, so a
population file is never whole in memory. Readers give float32 back whatever the storage dtype. The manifest of
the zoo is the union of the .json pieces (several jobs can fill one zoo without sharing a file);
``manifest.csv`` is a derived, human-readable copy.
"""

from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor

from weightsim.errors import ZooError
from weightsim.files import atomic_write, write_csv

FORMAT = "weightsim-zoo"
VERSION = 1
IMPORTED = "imported"  # the dataset name of a zoo of nets trained elsewhere (zoo/importer.py): it has no data
# what must agree between a zoo on disk and the config that wants to add to it
IDENTITY_KEYS = ("dataset", "arch", "training")
# the dtypes a zoo can store its floating-point weights in (integer buffers keep their own)
STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# safetensors' names of torch dtypes, in its order: a file lists its tensors by this rank, highest
# first, then by name (the order ``safetensors.torch.save`` writes, so both give the same bytes)
ST_DTYPES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
             torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.float64: "F64",
             torch.int64: "I64"}
ST_RANK = {d: i for i, d in enumerate(ST_DTYPES)}
WRITE_BLOCK = 64 * 2**20  # bytes of one tensor converted and written at a time


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def storage_dtype(name: str) -> torch.dtype:
    """The torch dtype of a storage dtype name (a zoo header's ``training.dtype``)."""
    if name not in STORAGE_DTYPES:
        raise ZooError(f"storage dtype '{name}' of a zoo is not one of {', '.join(STORAGE_DTYPES)}")
    return STORAGE_DTYPES[name]


def zoo_dtype(head: dict) -> str:
    """The storage dtype of the zoo whose header is ``head`` (zoos without one store float32)."""
    return (head.get("training") or {}).get("dtype", "float32")


def write_safetensors(f, tensors: dict[str, Tensor], metadata: dict[str, str], dtype: torch.dtype = torch.float32,
                      members: Tensor | None = None) -> tuple[str, int]:
    """Stream ``tensors`` (name -> (K, *shape), any device) to the open binary file ``f`` as one
    safetensors file; returns its (sha256, bytes).

    Floating-point tensors are stored as ``dtype``, others as they are; ``members`` (indices into
    the member axis) keeps only those members, in that order. The header is built from the shapes
    alone, then each tensor goes out ``WRITE_BLOCK`` bytes of members at a time (sliced, converted
    and copied to the host per block), so no more than one block is ever held here. The bytes are
    those ``safetensors.torch.save`` gives for the same (converted, selected) tensors.
    """
    def out_dtype(t: Tensor) -> torch.dtype:
        return dtype if t.is_floating_point() else t.dtype

    for k, t in tensors.items():
        if out_dtype(t) not in ST_DTYPES or t.dim() == 0:
            raise ZooError(f"zoo tensor {k!r} ({t.dtype}, {t.dim()} dims) cannot be stored: need a member axis "
                           f"and one of {', '.join(map(str, ST_DTYPES))}")
    order = sorted(tensors, key=lambda k: (-ST_RANK[out_dtype(tensors[k])], k))
    header: dict[str, object] = {"__metadata__": metadata}
    shapes, start = {}, 0
    for k in order:
        t = tensors[k]
        shapes[k] = [len(members) if members is not None else t.shape[0], *t.shape[1:]]
        size = math.prod(shapes[k]) * out_dtype(t).itemsize
        header[k] = {"dtype": ST_DTYPES[out_dtype(t)], "shape": shapes[k], "data_offsets": [start, start + size]}
        start += size
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    head += b" " * (-len(head) % 8)  # safetensors pads its header with spaces to a multiple of 8 bytes
    digest = hashlib.sha256()

    def put(buf) -> None:
        f.write(buf)
        digest.update(buf)

    put(len(head).to_bytes(8, "little") + head)
    for k in order:
        t, n = tensors[k], shapes[k][0]
        per_member = max(1, math.prod(shapes[k][1:]) * out_dtype(t).itemsize)
        step = max(1, WRITE_BLOCK // per_member)
        for i in range(0, n, step):
            block = t[i:i + step] if members is None else t.index_select(0, members[i:i + step].to(t.device))
            block = block.detach().to(dtype=out_dtype(t)).cpu().contiguous()  # convert where it lies, then copy
            put(block.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest(), 8 + len(head) + start


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
        self.identity = {"format": FORMAT, "version": VERSION, **identity}
        self.dtype = storage_dtype(zoo_dtype(self.identity))  # (training.dtype: the storage dtype)
        check_zoo_dir(self.root)
        (self.root / "weights").mkdir(parents=True, exist_ok=True)
        head = self.root / "zoo.json"
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
        """Write one population: stacked (K, ...) tensors (any device, float32 while training) and
        its K manifest rows; returns how many nets it added. Floating-point tensors are stored in
        the zoo's storage dtype.

        Under the zoo's lock, nets that another job has written meanwhile (seed blocks of concurrent
        jobs that overlap) are left out, so the zoo never holds a net twice; a population whose
        nets are all on disk already adds nothing.
        """
        with zoo_lock(self.root):
            done = self.done_nets()
            keep = [i for i, r in enumerate(rows) if (r["task"], r["seed"]) not in done]
            members = None  # all of them
            if len(keep) < len(rows):
                if not keep:
                    return 0
                members = torch.tensor(keep)
                rows = [rows[i] for i in keep]
            while (self.root / "weights" / f"{name}.json").exists():  # a piece of that name holds other nets
                name += "+"
            self._write(name, stacked, rows, members)
        return len(rows)

    def _write(self, name: str, stacked: dict[str, torch.Tensor], rows: list[dict],
               members: Tensor | None = None) -> None:
        # one metadata entry: safetensors writes a multi-key metadata map in hash order, which would
        # make the bytes differ from run to run
        meta = {FORMAT: json.dumps({"population": name, "version": VERSION})}
        wpath = self.root / "weights" / f"{name}.safetensors"
        out: dict[str, object] = {}
        atomic_write(wpath, lambda f: out.update(zip(("sha256", "bytes"),
                                                     write_safetensors(f, stacked, meta, self.dtype, members))))
        rows = [{**r, "file": wpath.name, "index": i, "sha256": out["sha256"], "bytes": out["bytes"]}
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
    """Refuse to add to a zoo made for another dataset, architecture, training config or storage
    dtype (``training.dtype``, absent for float32: a zoo never mixes dtypes)."""
    for key in IDENTITY_KEYS:
        if old.get(key) != new.get(key):
            a, b = old.get(key), new.get(key)
            if key == "training":  # name the storage dtype on both sides, float32 where it is implied
                a, b = ({**v, "dtype": zoo_dtype({"training": v})} if isinstance(v, dict) else v for v in (a, b))
            raise ZooError(f"zoo {root} was made for {_describe(key, a, b)}, but the "
                           f"config asks for {_describe(key, b, a)}: refused (nets of "
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


def not_a_directory(path: Path) -> Path | None:
    """The first of ``path`` and its ancestors that exists as something other than a directory (a
    file where a zoo directory is meant to be), or None."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def check_zoo_dir(path: str | Path, key: str = "zoo_dir") -> None:
    """Refuse a zoo directory that is a file or lies below one, in one line naming it."""
    bad = not_a_directory(Path(path))
    if bad is not None:
        where = "is a file" if bad == Path(path) else f"lies below {bad}, which is a file"
        raise ZooError(f"{key}={path} {where}, not a directory: pass the zoo's directory (the one "
                       f"holding zoo.json and weights/; weightsim-zoo creates it)")


def check_is_zoo(path: str | Path) -> None:
    """Refuse a path that holds no zoo (a file, a missing directory, one without zoo.json), in one
    line naming it: what ZooReader checks first, and the CLI before any work (weightsim/stages/check.py)."""
    root = Path(path)
    check_zoo_dir(root)
    if not root.is_dir():
        raise ZooError(f"zoo directory {root} does not exist: train one with "
                       f"`weightsim-zoo zoo_dir={root}` or pass the right zoo_dir=")
    if not (root / "zoo.json").exists():
        raise ZooError(f"{root} is not a zoo (no zoo.json): pass the directory weightsim-zoo wrote")


class ZooReader:
    """Reads a zoo directory: its header, its manifest rows, and its weights (safetensors only).

    verify: every weight file read from disk is checked against its manifest SHA-256 before it is
    parsed (a mismatch is a ZooError naming the file); False skips the check (docs/zoo.md: cost)."""

    def __init__(self, root: str | Path, verify: bool = True):
        self.root = Path(root)
        check_is_zoo(self.root)
        self.head = read_head(self.root / "zoo.json")
        self.dtype = zoo_dtype(self.head)  # the storage dtype; load() gives float32 whatever it is
        self.rows = self._read_rows()
        self.verify = verify
        self._sha = {r["file"]: r.get("sha256") for r in self.rows}  # file -> its manifest checksum
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
        """Stacked parameters of ``rows`` (default: all), in their order: name -> (N, *shape).

        Floating-point tensors come back as float32 whatever the zoo stores (bfloat16, float16
        widen exactly); integer buffers (BatchNorm's batch count) as they are. ``verify``: read and
        check every file again, the one kept from the last read too (files read from disk are
        checked anyway while ``self.verify``)."""
        rows = self.rows if rows is None else rows
        if not rows:
            raise ZooError(f"zoo {self.root} has no trained nets yet")
        out: dict[str, torch.Tensor] = {}
        for f in dict.fromkeys(r["file"] for r in rows):  # one file's tensors alive at a time, beside the result
            tensors = self.load_file(f, verify_sha=next(r["sha256"] for r in rows if r["file"] == f)
                                     if verify else None)
            mine = [i for i, r in enumerate(rows) if r["file"] == f]
            where, index = torch.tensor(mine), torch.tensor([rows[i]["index"] for i in mine])
            for k, t in tensors.items():
                if k not in out:  # floating point widened to float32, integer buffers as they are
                    dtype = torch.float32 if t.is_floating_point() else t.dtype
                    out[k] = torch.empty((len(rows), *t.shape[1:]), dtype=dtype)
                out[k][where] = t.index_select(0, index).to(out[k].dtype)
            del tensors
        return out

    def load_file(self, name: str, verify_sha: str | None = None) -> dict[str, torch.Tensor]:
        """The tensors of weights/``name`` (read-only use). Read from disk, the file is checked
        against ``verify_sha`` or, with ``self.verify``, its manifest checksum; an explicit
        ``verify_sha`` always reads the file."""
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
        want = verify_sha if verify_sha is not None else self._sha.get(name) if self.verify else None
        if want is not None and sha256_bytes(data) != want:
            raise ZooError(f"zoo file {path} does not match its manifest checksum (altered or truncated): "
                           f"`weightsim-zoo verify zoo_dir={self.root}` lists every problem; retrain or "
                           f"restore the file")
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
            write_csv(path, [{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
                             for r in self.rows])
        return path
