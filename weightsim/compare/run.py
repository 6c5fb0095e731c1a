"""weightsim-compare: every compare measure on one zoo, through the HTT protocols and pair by pair.

1. HTT (htt/run.py) with each measure of ``compare.measures``: the distance measures (1 - CKA,
   1 - s(eps), the weight-matching distance, the chain-Gram distance) by k-NN classification and
   retrieval / CMC, the chain Grams (``chain_gram``) by the weight classifier; report rows as HTT's.
2. Pairs (``compare.csv``): the ``compare.seeds`` lowest usable seeds of every task; every same-task
   pair, as many seeded different-task pairs, and for the activation measures every same-task pair
   again with net B's probe inputs shuffled (the null). Per pair and layer: CKA, s(eps) over the eps
   grid, the weight-matching distance (aligned and naive) and the loss barriers of ``barrier_pairs``
   pairs per relation; the CKA layer x layer matrix of the same-task pairs.
3. ``summary.csv``: per measure, layer (and eps) the mean and sd of every relation; plots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from weightsim.chains import ChainOptions
from weightsim.errors import ConfigError, warn
from weightsim.measures import DistanceMeasure, MeasureContext, make_measures, measure_class
from weightsim.measures.activation import ActivationMeasure
from weightsim.measures.align import loss_barrier
from weightsim.measures.cka import cka_matrix
from weightsim.measures.pairs import PairMeasure
from weightsim.nets.spec import BATCHNORMS
from weightsim.trainer import TrainerConfig
from weightsim.zoo.view import Zoo

RELATIONS = ("same_task", "different_task", "shuffled_input")


@dataclass
class CompareConfig:
    """Settings of weightsim-compare (the ``compare`` group): which measures, and which pairs of nets.
    Each measure's own settings are its group ``measure/<name>`` (weightsim/measures/), read by
    weightsim-htt as well; HTT's settings stay in ``protocol``."""

    measures: list[str] = field(default_factory=lambda: ["chain_gram", "chain_gram_distance", "cka", "match",
                                                         "weight_matching"])
    seeds: int = 5  # pairs: the lowest usable seeds of every task
    barrier_pairs: int = 10  # pairs per relation whose loss barrier (naive and aligned) is measured
    pair_seed: int = 0  # which different-task pairs and barrier pairs are drawn


def check_compare(cc: CompareConfig) -> None:
    if not cc.measures:
        raise ConfigError("compare.measures is empty: name at least one measure")
    for name in cc.measures:  # named here: HTT's own check would name protocol.measures
        measure_class(name, "compare.measures")
    for knob, low in (("seeds", 2), ("barrier_pairs", 0)):
        if getattr(cc, knob) < low:
            raise ConfigError(f"compare.{knob}={getattr(cc, knob)} must be >= {low}")


def check_same_net(zoo_dir: str, eval_zoo_dir: str) -> None:
    """weightsim-compare with eval_zoo_dir: HTT tests on eval_zoo_dir but the pairs (compare.csv)
    come from zoo_dir alone, so the two zoos must hold the same net; across architectures, use
    weightsim-htt."""
    a, b = Zoo(zoo_dir).head, Zoo(eval_zoo_dir).head
    net_a, net_b = (a["arch"], a["input_shape"]), (b["arch"], b["input_shape"])
    if net_a != net_b:
        raise ConfigError(f"zoo_dir {zoo_dir} holds arch '{a['arch'].get('name')}' {a['input_shape']} and eval_zoo_dir "
                          f"{eval_zoo_dir} arch '{b['arch'].get('name')}' {b['input_shape']} of another arch config: "
                          f"weightsim-compare reads retrieval from eval_zoo_dir but compare.csv from zoo_dir, so it "
                          f"needs one architecture in both (the same arch config); test across architectures with "
                          f"weightsim-htt zoo_dir=... eval_zoo_dir=...")


def runnable(measures: list, zoos: list[Zoo]) -> list:
    """The measures that can run on ``zoos``: all, unless a zoo holds imported nets without a dataset;
    then the activation measures (which feed the nets data) are left out with a warning that says so."""
    bare = [str(z.root) for z in zoos if not z.has_data]
    need = [m.name for m in measures if isinstance(m, ActivationMeasure)]
    if not bare or not need:
        return measures
    kept = [m for m in measures if not isinstance(m, ActivationMeasure)]
    if not kept:
        raise ConfigError(f"compare.measures={need} all need the nets' data, and zoo {bare[0]} holds imported nets "
                          f"without a dataset: choose weight measures, e.g. compare.measures=[weight_matching,"
                          f"chain_gram,chain_gram_distance]")
    warn(f"compare measure(s) {', '.join(need)} skipped: they need the nets' data, and zoo {bare[0]} holds imported "
         f"nets without a dataset; {', '.join(m.name for m in kept)} run")
    return kept


def build_measures(cc: CompareConfig, settings: dict | None = None, context: MeasureContext | None = None) -> list:
    """The measures of ``compare.measures``, each with its entry of ``settings`` (the ``measure``
    config node: name -> settings; missing: its defaults)."""
    return make_measures(cc.measures, settings, context, "compare.measures")


# -- the pairs -------------------------------------------------------------------------------------
def pair_nets(zoo: Zoo, cc: CompareConfig) -> tuple[list[tuple[dict, dict]], list[tuple[dict, dict]]]:
    """(same-task pairs, different-task pairs): every pair of the ``seeds`` lowest usable seeds of a
    task, and as many seeded pairs of nets of two different tasks."""
    by_task: dict[int, list[dict]] = {}
    for r in zoo.select(diverged=False):
        by_task.setdefault(r["task"], []).append(r)
    nets = {t: sorted(rs, key=lambda r: r["seed"])[:cc.seeds] for t, rs in sorted(by_task.items())}
    if len(nets) < 2 or max(len(v) for v in nets.values()) < 2:
        raise ConfigError(f"zoo {zoo.root}: pairs need 2 tasks and 2 usable seeds of a task; it has "
                          f"{len(nets)} task(s) with at most {max((len(v) for v in nets.values()), default=0)} seeds")
    same = [(a, b) for rs in nets.values() for i, a in enumerate(rs) for b in rs[i + 1:]]
    flat = [r for rs in nets.values() for r in rs]
    diff = [(a, b) for i, a in enumerate(flat) for b in flat[i + 1:] if a["task"] != b["task"]]
    pick = np.random.default_rng(cc.pair_seed).choice(len(diff), size=min(len(same), len(diff)), replace=False)
    return same, [diff[i] for i in sorted(pick)]


def pair_rows(zoo: Zoo, measures: list, cc: CompareConfig) -> list[dict]:
    """compare.csv: one row per (measure, layer, eps, pair, relation) with the pair's value."""
    same, diff = pair_nets(zoo, cc)
    rows = []

    def add(measure: str, layer: str, value: float, a: dict, b: dict, relation: str, eps: float | None = None):
        rows.append({"measure": measure, "layer": layer, "eps": eps, "relation": relation,
                     "task_a": a["task"], "seed_a": a["seed"], "task_b": b["task"], "seed_b": b["seed"],
                     "value": float(value)})

    for m in measures:
        if isinstance(m, ActivationMeasure):
            names = m.names(zoo)
            m.prepare(zoo, [r for p in same + diff for r in p])
            m.prepare(zoo, [b for _, b in same], shuffled=True)
            runs = [(p, "same_task", False) for p in same] + [(p, "different_task", False) for p in diff] \
                + [(p, "shuffled_input", True) for p in same]
            for (a, b), relation, shuffled in runs:
                values = m.value(zoo, a, zoo, b, shuffled)
                for layer, v in zip(names, values):
                    if m.name == "match":
                        for eps, s in zip(m.grid, v):
                            add("match", layer, s, a, b, relation, eps)
                    else:
                        add(m.name, layer, v, a, b, relation)
        elif isinstance(m, PairMeasure):  # weight matching: per chain layer, then the whole net
            layers = [k[0][0] for k in m.chain_keys(zoo)]
            for relation, pairs in (("same_task", same), ("different_task", diff)):
                for a, b in pairs:
                    d = m.value(zoo, a, zoo, b)
                    for layer, v in zip(layers, d):
                        add(m.name, layer, v, a, b, relation)
                    add(m.name, "net", math.sqrt(float((d ** 2).sum())), a, b, relation)
                    add("weight_naive", "net", m.naive_distance(zoo, a, zoo, b), a, b, relation)
            if zoo.has_data:
                rows += barrier_rows(zoo, m, same, diff, cc, data_dir(measures))
            elif cc.barrier_pairs:
                warn(f"loss barriers skipped: they need the nets' data and zoo {zoo.root} holds imported nets "
                     f"without a dataset (the weight-matching distances are measured)")
        elif isinstance(m, DistanceMeasure):  # chain-Gram distance
            for relation, pairs in (("same_task", same), ("different_task", diff)):
                nets = list({(r["task"], r["seed"]): r for p in pairs for r in p}.values())
                where = {(r["task"], r["seed"]): i for i, r in enumerate(nets)}
                dist = m.distances(zoo, nets, zoo, nets)
                for a, b in pairs:
                    for c, d in enumerate(dist, 1):
                        add(m.name, str(c), d[where[(a["task"], a["seed"])], where[(b["task"], b["seed"])]],
                            a, b, relation)
    return rows


def data_dir(measures: list) -> str | None:
    """Where the zoo's dataset lies: the activation measures' ``data_dir`` (null: the loader's default)."""
    return next((m.settings.data_dir for m in measures if isinstance(m, ActivationMeasure)), None)


def barrier_rows(zoo: Zoo, wm, same: list, diff: list, cc: CompareConfig, data: str | None = None) -> list[dict]:
    """Loss barriers of ``barrier_pairs`` seeded pairs per relation, on net A's task test data (the
    dataset in ``data``; None: the loader's default): of the straight line to net B as it is
    (``barrier_naive``) and to B after weight matching (``barrier_aligned``). BatchNorm statistics
    are re-estimated on A's training inputs at every lambda."""
    taskset = zoo.taskset(data)
    tasks = {t.id: t for t in taskset.tasks}
    has_bn = any(isinstance(mod, BATCHNORMS) for mod in zoo.template.modules())
    rng = np.random.default_rng(cc.pair_seed + 1)
    rows = []
    for relation, pairs in (("same_task", same), ("different_task", diff)):
        pick = rng.choice(len(pairs), size=min(cc.barrier_pairs, len(pairs)), replace=False) if pairs else []
        for i in sorted(pick):
            a, b = pairs[i]
            t = tasks[a["task"]]
            x, y = taskset.x[t.test_idx], t.test_y
            bn = taskset.x[t.train_idx] if has_bn else None
            net_a, net_b = wm.net(zoo, a), wm.net(zoo, b)
            for name, other in (("barrier_naive", net_b), ("barrier_aligned", wm.align(zoo, a, zoo, b))):
                rows.append({"measure": name, "layer": "net", "eps": None, "relation": relation,
                             "task_a": a["task"], "seed_a": a["seed"], "task_b": b["task"], "seed_b": b["seed"],
                             "value": loss_barrier(net_a, other, x, y, bn_batch=bn)})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per (measure, layer, eps): mean, sd and count of the values of every relation."""
    groups: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        groups.setdefault((r["measure"], r["layer"], r["eps"]), {}).setdefault(r["relation"], []).append(r["value"])
    out = []
    for (measure, layer, eps), rel in groups.items():
        row = {"measure": measure, "layer": layer, "eps": eps}
        for name in RELATIONS:
            v = np.asarray(rel.get(name, []), dtype=float)
            row[f"{name}_mean"] = float(np.nanmean(v)) if v.size else None
            row[f"{name}_sd"] = float(np.nanstd(v)) if v.size else None
            row[f"{name}_n"] = int(v.size)
        out.append(row)
    return out


def cka_layers(zoo: Zoo, measure: ActivationMeasure, cc: CompareConfig) -> tuple[np.ndarray, float, list[str]]:
    """Mean layer x layer linear CKA over the same-task pairs, and the identification rate: the share
    of (pair, layer of A) whose most CKA-similar layer of B is the same layer (Kornblith et al.'s
    sanity check). Each layer is one vector per probe input here (a conv map's positions x channels
    flattened), so conv layers of different map sizes compare."""
    same, _ = pair_nets(zoo, cc)
    n = len(measure.probe_of(zoo))

    def per_input(row: dict) -> list:  # a conv layer flattened per input (layers differ in positions)
        return [a.reshape(n, -1) for a in measure.layers(zoo, row)]

    mats = [cka_matrix(per_input(a), per_input(b)) for a, b in same]
    hits = [float(np.mean(np.nanargmax(np.nan_to_num(m, nan=-1.0), axis=1) == np.arange(len(m)))) for m in mats]
    return np.nanmean(np.stack(mats), axis=0), float(np.mean(hits)), measure.names(zoo)


def run_compare(zoo_dir: str, cc: CompareConfig, pc, clc, co: ChainOptions, seed: int = 0,
                progress: bool = True, eval_zoo_dir: str | None = None, measure_settings: dict | None = None,
                tc: TrainerConfig | None = None) -> dict:
    """HTT with every measure (eval_zoo_dir: tested on that zoo's nets, as weightsim-htt), then the
    pairs of ``zoo_dir``. measure_settings: the ``measure`` config node (name -> settings); tc: the
    classifiers' TrainerConfig (None: its defaults). Returns
    HTT's result plus "pairs", "summary" and "cka" ({"matrix", "identification", "layers"} when cka
    is measured)."""
    from dataclasses import asdict, replace

    check_compare(cc)
    if eval_zoo_dir:
        check_same_net(zoo_dir, eval_zoo_dir)
    zoo = Zoo(zoo_dir, pc.verify)
    built = build_measures(cc, measure_settings, MeasureContext(co, pc.metric))
    measures = runnable(built, [zoo] + ([Zoo(eval_zoo_dir, pc.verify)] if eval_zoo_dir else []))
    from weightsim.htt.run import run_htt  # (Lightning: imported once the zoos and measures passed their checks)

    result = run_htt(zoo_dir, replace(pc, measures=[m.name for m in measures]), clc, co, eval_zoo_dir, seed,
                     progress, measures=measures, tc=tc)
    pairs = pair_rows(zoo, measures, cc)
    result.update(pairs=pairs, summary=summarize(pairs), cka=None)
    for m in measures:
        if m.name == "cka":
            matrix, rate, names = cka_layers(zoo, m, cc)
            result["cka"] = {"matrix": matrix.tolist(), "identification": rate, "layers": names}
    same, diff = pair_nets(zoo, cc)
    result["meta"]["compare"] = {**cc.__dict__, "settings": {m.name: asdict(m.settings) for m in measures},
                                 "same_task_pairs": len(same), "different_task_pairs": len(diff)}
    if result["cka"]:
        result["meta"]["compare"]["cka_identification"] = result["cka"]["identification"]
    return result
