"""Check a zoo directory without trusting it: every manifest entry, every file, every checksum.

``weightsim-zoo verify zoo_dir=DIR`` (or ``python -m weightsim.zoo.verify DIR``) prints one line per
problem, naming the file, and exits 1 when there is any. Nothing in the zoo is executed: weights
are parsed as safetensors only, after their SHA-256 matched the manifest.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from weightsim.errors import ZooError
from weightsim.zoo.store import check_safetensors_bytes, inside_weights, looks_like_pickle, read_head, sha256_bytes

TMP = re.compile(r"^\..+\.tmp\d+$")  # files.atomic_write's temp names


@dataclass
class VerifyReport:
    """What ``verify_zoo`` found: problems (the zoo is not sound) and notes (harmless leftovers)."""

    root: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    nets: int = 0
    files: int = 0
    diverged: int = 0
    seeds_per_task: dict[int, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def coverage(self) -> str:
        """'tasks 0-14 x seeds [0, 30): complete', or which (task, seed) are missing."""
        if not self.seeds_per_task:
            return "no nets"
        all_seeds = sorted({s for v in self.seeds_per_task.values() for s in v})
        lo, hi = all_seeds[0], all_seeds[-1] + 1
        gaps = {t: sorted(set(range(lo, hi)) - set(v)) for t, v in sorted(self.seeds_per_task.items())}
        gaps = {t: g for t, g in gaps.items() if g}
        tasks = sorted(self.seeds_per_task)
        head = f"{len(tasks)} tasks x seeds [{lo}, {hi})"
        if not gaps:
            return head + ": complete"
        shown = "; ".join(f"task {t}: {_ranges(g)}" for t, g in list(gaps.items())[:10])
        return head + f": missing {sum(map(len, gaps.values()))} nets ({shown}{' ...' if len(gaps) > 10 else ''})"

    def text(self) -> str:
        lines = [f"zoo {self.root}: {self.nets} nets in {self.files} weight files, {self.diverged} flagged "
                 f"diverged; {self.coverage()}"]
        lines += [f"PROBLEM: {p}" for p in self.problems]
        lines += [f"note: {n}" for n in self.notes]
        lines.append("OK: every manifest entry has its file and its checksum matches" if self.ok
                     else f"FAILED: {len(self.problems)} problem(s)")
        return "\n".join(lines)


def _ranges(xs: list[int]) -> str:
    out, start = [], xs[0]
    for a, b in zip(xs, xs[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return "seeds " + ",".join(out)


def verify_zoo(root: str | Path, expect_tasks: bool = True) -> VerifyReport:
    """Check the zoo at ``root``; never raises for a broken zoo, reports instead.

    Checks: zoo.json is a weightsim header; every manifest piece parses; every row's file exists,
    has the recorded size (else truncated) and SHA-256 (else altered), is a safetensors file (never
    a pickle) whose tensors hold the row's index; no (task, seed) twice; every file in weights/ is
    a safetensors file or a manifest piece. With ``expect_tasks``, tasks of the header without any
    net are noted (an unfinished zoo is incomplete, not corrupt).
    """
    root = Path(root)
    rep = VerifyReport(root)
    if not root.is_dir():
        rep.problems.append(f"{root}: {'a file, not a zoo directory' if root.exists() else 'no such directory'}")
        return rep
    try:
        head = read_head(root / "zoo.json")
    except ZooError as e:
        rep.problems.append(str(e))
        head = {}
    wdir = root / "weights"
    if not wdir.is_dir():
        rep.problems.append(f"{wdir}: missing (no weights at all)")
        return rep
    referenced: set[str] = set()
    seen: dict[tuple[int, int], str] = {}
    by_file: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for piece in sorted(wdir.glob("*.json")):
        try:
            rows = json.loads(piece.read_text())
            if not isinstance(rows, list):
                raise ValueError("not a list of rows")
        except (OSError, ValueError) as e:
            rep.problems.append(f"{piece}: manifest piece unreadable ({e})")
            continue
        for r in rows:
            if not isinstance(r, dict) or not {"task", "seed", "file", "index", "sha256"} <= set(r):
                rep.problems.append(f"{piece}: a row lacks task/seed/file/index/sha256: {str(r)[:120]}")
                continue
            key = (r["task"], r["seed"])
            if key in seen:
                rep.problems.append(f"{piece}: net task={key[0]} seed={key[1]} is also in {seen[key]} (duplicate)")
                continue
            seen[key] = piece.name
            rep.nets += 1
            rep.diverged += bool(r.get("diverged"))
            rep.seeds_per_task.setdefault(r["task"], []).append(r["seed"])
            by_file[str(r["file"])].append((piece.name, r))
    for name, rows in sorted(by_file.items()):
        path = wdir / name
        referenced.add(name)
        if not inside_weights(name):
            rep.problems.append(f"{rows[0][0]}: refers to {name!r}, outside weights/: refused")
            continue
        if not path.is_file():
            rep.problems.append(f"{path}: missing (listed in {rows[0][0]})")
            continue
        data = path.read_bytes()
        rep.files += 1
        want_sha, want_bytes = rows[0][1]["sha256"], rows[0][1].get("bytes")
        if want_bytes is not None and len(data) < want_bytes:
            rep.problems.append(f"{path}: truncated ({len(data)} of {want_bytes} bytes)")
            continue
        if sha256_bytes(data) != want_sha:
            what = "size changed" if want_bytes is not None and len(data) != want_bytes else "content altered"
            rep.problems.append(f"{path}: checksum mismatch, {what} (sha256 {sha256_bytes(data)[:12]}... "
                                f"!= manifest {want_sha[:12]}...)")
            continue
        try:
            check_safetensors_bytes(data, path)
            tensors = st_load(data)
        except ZooError as e:
            rep.problems.append(str(e))
            continue
        except (SafetensorError, ValueError) as e:
            rep.problems.append(f"{path}: not a readable safetensors file ({e})")
            continue
        k = min((t.shape[0] if t.dim() else 0) for t in tensors.values()) if tensors else 0
        bad = [r["index"] for _, r in rows if not 0 <= int(r["index"]) < k]
        if bad:
            rep.problems.append(f"{path}: holds {k} nets but the manifest indexes {bad[:5]}")
        for _, r in rows:
            if 0 <= int(r["index"]) < k and not r.get("diverged"):
                if not all(bool(torch.isfinite(t[int(r["index"])]).all()) for t in tensors.values()
                           if t.is_floating_point()):
                    rep.problems.append(f"{path}: net task={r['task']} seed={r['seed']} has non-finite "
                                        f"weights but is not flagged diverged")
    for f in sorted(wdir.iterdir()):
        if f.suffix == ".json" or f.name in referenced:
            continue
        if TMP.match(f.name):
            rep.notes.append(f"{f}: temp file of an interrupted write (harmless; safe to delete)")
        elif f.suffix == ".safetensors":
            rep.notes.append(f"{f}: not in the manifest (a write interrupted before its manifest piece; "
                             f"rerunning the zoo command retrains it)")
        else:
            head_bytes = f.read_bytes()[:2] if f.is_file() else b""
            kind = "a pickle / torch.save file" if looks_like_pickle(head_bytes) else "not a zoo file"
            rep.problems.append(f"{f}: {kind}: refused (a zoo holds only .safetensors weights and .json "
                                f"manifest pieces)")
    if expect_tasks and head.get("tasks"):
        empty = [t["id"] for t in head["tasks"] if t["id"] not in rep.seeds_per_task]
        if empty:
            rep.notes.append(f"{root}: tasks {empty[:20]} of zoo.json have no nets yet")
    return rep


USAGE = """usage: weightsim-zoo verify zoo_dir=DIR   (or: python -m weightsim.zoo.verify DIR)

Checks a zoo without trusting it: every manifest row's file exists, has its recorded size and
SHA-256, parses as safetensors and holds the row's index; no net is listed twice; weights/ holds
nothing else; nets not flagged diverged have finite weights. Prints one line per problem and the
coverage (tasks x seeds, what is missing); exits 0 when sound, 1 on any problem (docs/zoo.md)."""


def main(argv: list[str] | None = None) -> int:
    """``python -m weightsim.zoo.verify DIR`` or ``zoo_dir=DIR``: print the report, 1 on problems."""
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(USAGE)
        return 0
    dirs = [a.split("=", 1)[1] if a.startswith("zoo_dir=") else a for a in argv]
    if len(dirs) != 1:
        print(USAGE.splitlines()[0], file=sys.stderr)
        return 2
    rep = verify_zoo(dirs[0])
    print(rep.text())
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
