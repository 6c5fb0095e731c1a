"""Import nets trained elsewhere as an ordinary zoo: a folder of checkpoints, an index CSV that says
which task and seed each one is, and the architecture (an ``arch`` config or a template module).

    import_nets("ckpts", "ckpts/index.csv", "zoos/mine", arch="mlp", overrides=["hidden=32", "depth=3"])

index.csv has a header and one row per net: ``file`` (relative to the folder), ``task`` and ``seed``
(integers; task names are numbered in order of appearance), optionally ``role`` (train, the default,
or unseen: tasks only retrieval sees). Checkpoints are ``.safetensors`` files or ``.pt`` / ``.pth``
state dicts, read with ``torch.load(weights_only=True)`` (a pickled whole module needs code to load
and is refused). Checkpoint keys that differ from the architecture's are mapped module by module, in
order, when every module's tensors have the same names and shapes (a plain ``nn.Sequential``'s ``0``
is the built-in MLP's ``1``, which starts with a Flatten); the mapping is printed, and anything that
does not map is one error line. The zoo is written by ``ZooWriter`` (zoo.json, safetensors, manifest
pieces with checksums), so verify, HTT and compare read it like a trained one; its dataset is
``imported`` (none), so measures that need the nets' data say so instead of running.
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import re
from pathlib import Path
from typing import Callable

import torch
from omegaconf import OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor, nn

from weightsim.errors import ConfigError, ZooError, warn
from weightsim.nets.build import build_net
from weightsim.nets.sequential import sequential_spec
from weightsim.paths import CONF
from weightsim.zoo.store import IMPORTED, ZooWriter, check_safetensors_bytes

ROLES = ("train", "unseen")
SUFFIXES = (".safetensors", ".pt", ".pth")
POPULATION_BYTES = 256 * 2**20  # nets stacked into one weight file, at most this many bytes (one net more)


# -- the index ------------------------------------------------------------------------------------
def read_index(index: str | Path, folder: str | Path) -> list[dict]:
    """The index CSV's rows as {"path", "source", "task", "seed", "role", "task_name"}, sorted by
    (task, seed); every error is one line naming the row."""
    index, folder = Path(index), Path(folder)
    if not index.is_file():
        raise ConfigError(f"index {index} does not exist: write a CSV with columns file,task,seed (and optionally "
                          f"role) beside the checkpoints")
    with open(index, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file", "task", "seed"} - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"index {index} lacks column(s) {', '.join(sorted(missing))}: its header must name "
                              f"file,task,seed (role optional); it has {', '.join(reader.fieldnames or []) or 'none'}")
        raw = list(reader)
    if not raw:
        raise ConfigError(f"index {index} lists no nets")
    names = [str(r["task"]).strip() for r in raw]
    numbered = all(re.fullmatch(r"\d+", n) for n in names)
    ids = {n: int(n) if numbered else i for i, n in enumerate(dict.fromkeys(names))}
    rows, seen = [], {}
    for line, (r, name) in enumerate(zip(raw, names), start=2):
        where = f"index {index} line {line}"
        try:
            seed = int(str(r["seed"]).strip())
        except ValueError:
            raise ConfigError(f"{where}: seed {r['seed']!r} is not an integer") from None
        role = (r.get("role") or "train").strip()
        if role not in ROLES:
            raise ConfigError(f"{where}: role {role!r} must be train or unseen")
        path = folder / str(r["file"]).strip()
        if path.suffix not in SUFFIXES:
            raise ConfigError(f"{where}: {path.name} is not a checkpoint ({', '.join(SUFFIXES)})")
        if not path.is_file():
            raise ConfigError(f"{where}: checkpoint {path} does not exist (file names are relative to {folder})")
        key = (ids[name], seed)
        if key in seen:
            raise ConfigError(f"{where}: task {name} seed {seed} is also on line {seen[key]}: one net per (task, seed)")
        seen[key] = line
        rows.append({"path": path, "source": str(r["file"]).strip(), "task": ids[name], "seed": seed,
                     "role": role, "task_name": name})
    roles = {}
    for r in rows:
        if roles.setdefault(r["task"], r["role"]) != r["role"]:
            raise ConfigError(f"index {index}: task {r['task_name']} is both train and unseen: one role per task")
    return sorted(rows, key=lambda r: (r["task"], r["seed"]))


# -- one checkpoint -------------------------------------------------------------------------------
def read_checkpoint(path: Path) -> dict[str, Tensor]:
    """A checkpoint's tensors, name -> tensor, in layer order: a safetensors file's in natural order of
    their names ("2.weight" before "10.weight"), a torch.save state dict's (also one inside a dict
    under "state_dict", as Lightning saves it; read with weights_only=True) in the dict's order."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        check_safetensors_bytes(data, path)
        try:
            tensors = st_load(data)
            return {k: tensors[k] for k in sorted(tensors, key=_natural)}  # the file's order is by dtype and name
        except (SafetensorError, ValueError) as e:
            raise ZooError(f"checkpoint {path} is corrupt ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        what = "a whole pickled module or other objects that need code to load" \
            if "weights_only" in str(e) or "Weights only" in str(e) else f"unreadable ({str(e).splitlines()[0]})"
        raise ZooError(f"checkpoint {path} cannot be read with torch.load(weights_only=True): {what}; save its "
                       f"state dict instead (torch.save(net.state_dict(), path)) or a .safetensors file") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ZooError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict of tensors: save "
                       f"torch.save(net.state_dict(), path)")
    return dict(obj)


def _natural(key: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def _modules(keys: list[str]) -> dict[str, list[str]]:
    """Module prefix -> its tensor names ("1.weight" -> "1": ["weight"]), in the keys' order."""
    out: dict[str, list[str]] = {}
    for k in keys:
        prefix, _, leaf = k.rpartition(".")
        out.setdefault(prefix, []).append(leaf)
    return out


def map_keys(want: dict[str, Tensor], have: dict[str, Tensor], source: str) -> dict[str, str]:
    """The architecture's key -> the checkpoint's key: the same names where they agree, else module by
    module in order, each pair of modules with the same tensor names and shapes. ConfigError naming
    the first module that does not map."""
    if set(want) == set(have):
        pairs = {k: k for k in want}
    else:
        mine, theirs = _modules(list(want)), _modules(list(have))
        if len(mine) != len(theirs):
            raise ConfigError(f"checkpoint {source} has {len(theirs)} modules with tensors ({', '.join(theirs)}), "
                              f"the architecture {len(mine)} ({', '.join(mine)}): cannot map them; pass the arch "
                              f"(and its overrides) the nets were trained as")
        pairs = {}
        for (a, leaves_a), (b, leaves_b) in zip(mine.items(), theirs.items()):
            if sorted(leaves_a) != sorted(leaves_b):
                raise ConfigError(f"checkpoint {source}: module '{b}' holds {', '.join(leaves_b)} where the "
                                  f"architecture's module '{a}' holds {', '.join(leaves_a)}: cannot map them")
            pairs.update({f"{a}.{leaf}" if a else leaf: f"{b}.{leaf}" if b else leaf for leaf in leaves_a})
    for k, src in pairs.items():
        if tuple(want[k].shape) != tuple(have[src].shape):
            raise ConfigError(f"checkpoint {source}: tensor '{src}' has shape {tuple(have[src].shape)} where the "
                              f"architecture's '{k}' has {tuple(want[k].shape)}: pass the arch overrides that give "
                              f"the checkpoint's shapes (e.g. arch.hidden=, arch.depth=)")
    return pairs


def describe_mapping(pairs: dict[str, str]) -> str:
    """'0 -> 1, 2 -> 3' (checkpoint module -> architecture module), or '' when every name agrees."""
    moved = {}
    for k, src in pairs.items():
        if k != src:
            moved.setdefault(src.rpartition(".")[0] or "<root>", k.rpartition(".")[0] or "<root>")
    return ", ".join(f"{b} -> {a}" for b, a in moved.items())


# -- the architecture -----------------------------------------------------------------------------
def arch_config(arch: str | dict, overrides: list[str] | tuple[str, ...] = ()) -> tuple[str, dict]:
    """(name, config) of an arch choice (conf/arch/<name>.yaml) with ``overrides`` ("hidden=32"), or of
    a config dict with a ``_target_`` (name: its ``name`` entry, else the builder's)."""
    if isinstance(arch, str):
        path = CONF / "arch" / f"{arch}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in (CONF / "arch").glob("*.yaml") if not p.stem.startswith("_"))
            raise ConfigError(f"unknown arch '{arch}': choose from {', '.join(names)}")
        cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist([o.removeprefix("arch.")
                                                                          for o in overrides]))
        return arch, OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(arch)
    return str(cfg.pop("name", None) or str(cfg.get("_target_", "")).rsplit(".", 1)[-1]), cfg


def infer_shapes(state: dict[str, Tensor], input_shape, num_classes) -> tuple[list[int], int]:
    """input_shape and num_classes when not given: a net whose first weight is a matrix reads vectors
    of its width; the last weight's rows are the classes."""
    weights = [t for t in state.values() if t.dim() >= 2]
    if not weights:
        raise ConfigError("the checkpoints hold no weight matrix: nothing to import")
    if input_shape is None:
        if weights[0].dim() != 2:
            raise ConfigError(f"the first weight has shape {tuple(weights[0].shape)} (not a Linear's): pass "
                              f"input_shape= (e.g. [3, 32, 32]) for the nets' inputs")
        input_shape = [weights[0].shape[1]]
    return [int(s) for s in input_shape], int(num_classes if num_classes is not None else weights[-1].shape[0])


def template_arch(template: nn.Module) -> tuple[str, dict]:
    """(name, config) that rebuilds ``template`` from zoo.json (weightsim/nets/sequential.py)."""
    return "sequential", {"_target_": "weightsim.nets.sequential.Sequential", "_partial_": True,
                          "spec": sequential_spec(template)}


# -- the import -----------------------------------------------------------------------------------
def import_nets(folder: str | Path, index: str | Path | None, zoo_dir: str | Path,
                arch: str | dict | nn.Module = "mlp", overrides: list[str] | tuple[str, ...] = (),
                input_shape: list[int] | None = None, num_classes: int | None = None,
                log: Callable[[str], None] | None = print) -> Path:
    """Write the checkpoints of ``folder`` listed in ``index`` (default ``folder/index.csv``) as a zoo
    at ``zoo_dir`` and return it.

    arch: an arch choice (``"mlp"``) with ``overrides`` (``["hidden=32"]``), an arch config dict, or a
    template ``nn.Module`` (an ``nn.Sequential`` of torch.nn layers). input_shape (default: the first
    Linear's width) and num_classes (default: the last weight's rows) are the nets'. ``log`` gets the
    key mapping and the summary (None: silent). Every checkpoint is read and mapped before anything is
    written; nets already in the zoo are kept (importing again adds only new ones).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"checkpoint folder {folder} does not exist")
    nets = read_index(Path(index) if index is not None else folder / "index.csv", folder)
    first = read_checkpoint(nets[0]["path"])
    name, cfg = template_arch(arch) if isinstance(arch, nn.Module) else arch_config(arch, overrides)
    shape, classes = infer_shapes(arch.state_dict() if isinstance(arch, nn.Module) else first, input_shape,
                                  num_classes)
    want = build_net(cfg, shape, classes).state_dict()
    states, pairs = [], None
    for net in nets:
        state = first if net is nets[0] else read_checkpoint(net["path"])
        mapping = map_keys(want, state, str(net["path"]))
        if pairs is None:
            pairs = mapping
            if log and describe_mapping(mapping):
                log(f"import: checkpoint modules mapped to arch '{name}' by order and shape: {describe_mapping(mapping)}")
        elif mapping != pairs:
            raise ConfigError(f"checkpoint {net['path']} names its tensors unlike {nets[0]['path']}: one naming "
                              f"for all nets of a zoo")
        states.append({k: state[src].to(want[k].dtype) for k, src in mapping.items()})
        net["sha256"] = hashlib.sha256(net["path"].read_bytes()).hexdigest()
    return write_zoo(zoo_dir, name, cfg, shape, classes, nets, states, log)


def write_zoo(zoo_dir: str | Path, name: str, cfg: dict, input_shape: list[int], num_classes: int,
              nets: list[dict], states: list[dict[str, Tensor]], log: Callable[[str], None] | None = print) -> Path:
    """Write nets of the arch ``name`` (config ``cfg``) as a zoo of no dataset. nets: per net {"task",
    "seed", "role", "task_name", "source"} (optionally "sha256" of the source file), sorted by (task,
    seed); states: per net its tensors under the arch's names, shapes as the arch's."""
    identity = {"dataset": {"name": IMPORTED, "config": {}, "fingerprint": None},
                "arch": {"name": name, "config": cfg}, "input_shape": list(input_shape), "num_classes": num_classes,
                "data_info": {}, "training": {IMPORTED: True},
                "tasks": [{"id": t, "name": n, "role": r} for t, n, r in
                          dict.fromkeys((x["task"], x["task_name"], x["role"]) for x in nets)]}
    identity["config_hash"] = hashlib.sha256(json.dumps([cfg, list(input_shape), num_classes],
                                                        sort_keys=True).encode()).hexdigest()[:16]
    writer = ZooWriter(zoo_dir, identity)
    keys = list(states[0])
    per_net = sum(t.numel() * t.element_size() for t in states[0].values())
    step = max(1, POPULATION_BYTES // max(1, per_net))
    added, diverged = 0, []
    for i in range(0, len(nets), step):
        chunk, part = nets[i:i + step], states[i:i + step]
        stacked = {k: torch.stack([s[k] for s in part]) for k in keys}
        rows = []
        for net, s in zip(chunk, part):
            finite = all(bool(torch.isfinite(t).all()) for t in s.values() if t.is_floating_point())
            if not finite:
                diverged.append(net["source"])
            rows.append({"task": net["task"], "seed": net["seed"], "role": net["role"], "classes": None,
                         "task_name": net["task_name"], "diverged": not finite, "train_acc": None,
                         "test_acc": None, "source": net["source"], "source_sha256": net.get("sha256"),
                         "config_hash": identity["config_hash"]})
        (t0, s0), (t1, s1) = (chunk[0]["task"], chunk[0]["seed"]), (chunk[-1]["task"], chunk[-1]["seed"])
        added += writer.write(f"imported_t{t0:03d}s{s0:05d}-t{t1:03d}s{s1:05d}", stacked, rows)
    writer.write_manifest_csv()
    if diverged:
        warn(f"{len(diverged)} imported net(s) have non-finite weights ({', '.join(diverged[:5])}): flagged diverged, "
             f"left out of HTT")
    if log:
        log(f"import: {added} of {len(nets)} nets added to zoo {zoo_dir} ({len({n['task'] for n in nets})} tasks, "
            f"arch '{name}', input shape {list(input_shape)}, {num_classes} classes)")
    return Path(zoo_dir)
