"""Read wandb runs back as plain dicts {id, name, group, tags, config, summary}: offline runs (with
their history) from their ``run-<id>.wandb`` file (no network, no account), synced runs through
wandb's public API.

An offline run keeps no wandb-summary.json; its record of everything is the ``.wandb`` file: a
7-byte header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each chunk a 7-byte
header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes; a record (one or
more chunks) is a serialized ``wandb_internal_pb2.Record``. wandb 0.31 ships no Python reader of it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

from weightsim.errors import DataError

BLOCK, CHUNK_HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator:
    """The ``Record`` protobufs of one offline run file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise DataError(f"{path} is not a wandb run file (no :W&B header): pass a run-<id>.wandb file")
    pos, parts = 7, []
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if kind == 0 and n == 0:  # zero padding at the end of a block
            pos += left
            continue
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + n]
        pos += CHUNK_HEADER + n
        parts = [chunk] if kind in (FULL, FIRST) else parts + [chunk]
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            yield record


def _set(tree: dict, path: list[str], value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def read_offline_run(path: str | Path) -> dict:
    """One offline run: ``path`` is its run-<id>.wandb file or its offline-run-* directory.
    The summary holds the last value of every key (nested keys such as a histogram's as dicts); the
    history one dict per logged step, in order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise DataError(f"{path} holds no run-*.wandb file: pass an offline-run-* directory of wandb")
        path = files[0]
    run = {"id": None, "name": None, "group": None, "tags": [], "config": {}, "summary": {}, "history": [],
           "path": str(path)}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, name=r.display_name, group=r.run_group, tags=list(r.tags))
            for item in r.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                _set(run["config"], list(item.nested_key) or [item.key], json.loads(item.value_json))
        elif kind == "history":  # one wandb.log call: its keys and values, as one dict
            step = {}
            for item in record.history.item:
                _set(step, list(item.nested_key) or [item.key], json.loads(item.value_json))
            run["history"].append(step)
        elif kind == "summary":
            for item in record.summary.update:
                _set(run["summary"], list(item.nested_key) or [item.key], json.loads(item.value_json))
    run["config"].pop("_wandb", None)
    return run


def offline_runs(root: str | Path) -> list[dict]:
    """Every offline run under ``root`` (e.g. a multirun sweep directory), in path order."""
    return [read_offline_run(p) for p in sorted(Path(root).rglob("offline-run-*/run-*.wandb"))]


def online_runs(path: str, filters: dict | None = None) -> list[dict]:
    """The runs of ``path`` (``entity/project``) through the public API (network and login needed)."""
    import wandb

    return [{"id": r.id, "name": r.name, "group": r.group, "tags": list(r.tags), "config": dict(r.config),
             "summary": dict(r.summary), "path": r.url} for r in wandb.Api().runs(path, filters=filters or {})]
