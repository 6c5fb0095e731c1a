"""HTT in one call on nets or features held in memory: ``weightsim.htt.test(nets, tasks)``.

The nets (or per-chain features) are written as a zoo in a temporary directory, the way
``weightsim-zoo import`` writes checkpoints, and ``run_htt`` tests that zoo: the rows are those
``weightsim-htt`` gives on the same zoo, with the same settings.

    import weightsim.htt as htt
    result = htt.test(nets, tasks, unseen=[3, 4], protocol={"queries": 2})
    result["rows"]        # one dict per protocol, measure and chain (and "all"), as report.csv
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import replace

from torch import Tensor, nn

from weightsim.chains import ChainOptions
from weightsim.errors import ConfigError, WeightsimWarning
from weightsim.htt.run import run_htt
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
from weightsim.nets.build import build_net
from weightsim.zoo.importer import infer_shapes, template_arch, write_zoo

FEATURES_ARCH = "weightsim.nets.features.Features"


def _settings(kind: type, given) -> object:
    """A settings dataclass from None (its defaults), a dict of its fields, or an instance."""
    if given is None:
        return kind()
    if isinstance(given, kind):
        return given
    if isinstance(given, dict):
        unknown = set(given) - set(kind.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{kind.__name__} has no setting(s) {', '.join(sorted(unknown))}: choose from "
                              f"{', '.join(kind.__dataclass_fields__)}")
        return kind(**given)
    raise ConfigError(f"pass {kind.__name__} settings as a dict or a {kind.__name__}, not {type(given).__name__}")


def _nets(tasks: Sequence, unseen: Sequence) -> list[dict]:
    """Per net {"task", "seed", "role", "task_name", "source"}: tasks numbered in order of appearance,
    seeds in order within a task."""
    ids = {t: i for i, t in enumerate(dict.fromkeys(tasks))}
    missing = [u for u in unseen if u not in ids]
    if missing:
        raise ConfigError(f"unseen tasks {missing} are not among the tasks given ({', '.join(map(str, ids))})")
    count: dict = {}
    out = []
    for i, t in enumerate(tasks):
        count[t] = count.get(t, -1) + 1
        out.append({"task": ids[t], "seed": count[t], "role": "unseen" if t in unseen else "train",
                    "task_name": str(t), "source": f"item {i}", "index": i})
    return sorted(out, key=lambda r: (r["task"], r["seed"]))


def _as_chains(features) -> list[Tensor] | None:
    """Per chain an (N, D_c) tensor, or None when ``features`` are nets."""
    if isinstance(features, Tensor):
        features = [features]
    if isinstance(features, (list, tuple)) and features and all(isinstance(f, Tensor) for f in features):
        for c, f in enumerate(features, 1):
            if f.dim() != 2:
                raise ConfigError(f"features of chain {c} have shape {tuple(f.shape)}: pass (N, D) per chain")
        if len({f.shape[0] for f in features}) > 1:
            raise ConfigError(f"the chains' features hold {[f.shape[0] for f in features]} nets: one row per net in each")
        return list(features)
    return None


def _write(items, nets: list[dict], root: str) -> list[str] | None:
    """Write the nets or features as a zoo at ``root``; the measures that features imply (else None)."""
    chains = _as_chains(items)
    if chains is not None:
        cfg = {"_target_": FEATURES_ARCH, "dims": [int(f.shape[1]) for f in chains]}
        states = [{f"chain{c}": chains[c - 1][n["index"]].detach().float().cpu() for c in range(1, len(chains) + 1)}
                  for n in nets]
        write_zoo(root, "features", cfg, [], 0, nets, states, log=None)
        return ["features"]
    modules = list(items)
    if not modules or not all(isinstance(m, nn.Module) for m in modules):
        raise ConfigError("weightsim.htt.test takes a list of nn.Modules (one architecture) or features: an (N, D) "
                          "tensor or a list of (N, D_c) tensors, one per chain")
    try:
        name, cfg = template_arch(modules[0])
    except ConfigError as e:
        raise ConfigError(f"{e.args[0].split(': for another net')[0]}: for another net pass its features, e.g. "
                          f"per chain c torch.stack([chain_features(net)[c] for net in nets])") from None
    state0 = modules[0].state_dict()
    shape, classes = infer_shapes(state0, getattr(modules[0], "input_shape", None), None)
    want = build_net(cfg, shape, classes).state_dict()
    states = []
    for n in nets:
        state = modules[n["index"]].state_dict()
        if [(k, tuple(v.shape)) for k, v in state.items()] != [(k, tuple(v.shape)) for k, v in want.items()]:
            raise ConfigError(f"net {n['index']} has other tensors or shapes than net 0: one architecture for all nets")
        states.append({k: v.detach().to("cpu", want[k].dtype) for k, v in state.items()})
    write_zoo(root, name, cfg, shape, classes, nets, states, log=None)
    return None


def test(nets_or_features, tasks: Sequence, *, unseen: Sequence = (), protocol: dict | ProtocolConfig | None = None,
         classifier: dict | ClassifierConfig | None = None, chains: dict | ChainOptions | None = None, seed: int = 0,
         progress: bool = False) -> dict:
    """Hypothesis-training-testing on nets or features in memory; returns weightsim-htt's result.

    nets_or_features: N trained nets of one architecture (``nn.Sequential`` of torch.nn layers, e.g.
    Linear / Conv2d with activations, as ``chain_features`` takes), or their features: an (N, D)
    tensor (one chain) or a list of (N, D_c) tensors (chain c). tasks: N task labels, one per net;
    nets of one task are its seeds, in the order given. unseen: labels of tasks that only retrieval
    sees (at least 2 tasks with more nets than ``protocol.queries``); the others train and test the
    classifier. protocol / classifier / chains: dicts of ``ProtocolConfig`` / ``ClassifierConfig`` /
    ``ChainOptions`` settings (docs/htt.md), e.g. ``protocol={"alpha": 0.01, "queries": 2}``; on
    features the measure is ``features``.

    Returns {"rows": [...], "cmc": {(chain, measure): curve}, "meta": {..., "warnings": [...]}}: rows
    as weightsim-htt's report.csv (both protocols where the tasks allow, the nulls' p-values, the
    error bound, the effect size, the repeats' mean and sd). Lightning prints nothing; each warning
    is issued once (a ``WeightsimWarning``) and listed in meta["warnings"].
    """
    items = nets_or_features if isinstance(nets_or_features, Tensor) else list(nets_or_features)
    tasks = list(tasks)
    n = len(tasks)
    chains_given = _as_chains(items)
    count = chains_given[0].shape[0] if chains_given is not None else len(items)
    if count != n:
        raise ConfigError(f"{count} nets (or feature rows) but {n} task labels: pass one task label per net")
    pc = _settings(ProtocolConfig, protocol)
    cc, co = _settings(ClassifierConfig, classifier), _settings(ChainOptions, chains)
    nets = _nets(tasks, list(unseen))
    with tempfile.TemporaryDirectory(prefix="weightsim-htt-") as root, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WeightsimWarning)
        implied = _write(items, nets, root)
        if implied:
            if protocol is not None and isinstance(protocol, dict) and "measures" in protocol \
                    and list(pc.measures) != implied:
                raise ConfigError(f"protocol.measures={list(pc.measures)} on features: features are tested as they "
                                  f"are (measure 'features'); leave protocol measures out")
            pc = replace(pc, measures=implied)
        result = run_htt(root, pc, cc, co, seed=seed, progress=progress)
    seen: list[str] = []
    for w in caught:
        if issubclass(w.category, WeightsimWarning):
            if str(w.message) not in seen:
                seen.append(str(w.message))
                warnings.warn(str(w.message), WeightsimWarning, stacklevel=2)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    result["meta"].update(zoo_dir=None, eval_zoo_dir=None, warnings=seen)
    return result
