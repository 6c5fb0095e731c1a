"""weightsim-plan: what a run or a sweep will cost, before it runs and without its data (docs/experiments.md, *Planning*).

It takes the overrides of ``weightsim-run`` (``-m`` walks the sweep's jobs as Hydra's basic sweeper
would: the experiment's ``hydra.sweeper.params`` and the command line's comma lists) and prints, per
job and in total: nets, SGD steps, FLOPs (zoo training; HTT featurization per zoo), the planned peak
memory of a population (zoo/memory.py), the zoo's disk size, and time estimates from this machine's
measured matmul rate and from a GPU at a stated fraction of its peak. It says which items fit one
80 GB GPU and a 64 GB disk, and what to change when one does not.

FLOPs are torch.utils.flop_counter's counts (matmuls and convolutions) on one net: a lower bound,
and small nets are bound by memory and overheads, not FLOPs, so the times are lower bounds too.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from weightsim.data.shapes import DataShape, data_shape
from weightsim.zoo.generate import ZooConfig, builder
from weightsim.zoo.memory import PopulationMemory, measure_population

GPU_NAME, GPU_PEAK, GPU_FRACTION = "H100", 60e12, 0.30  # fp32 FLOP/s (non-tensor-core), share reached
GPU_MEMORY = 79 * 2**30  # what an 80 GB card lets a process allocate
DISK = 64e9  # bytes: the disk of a lent GPU machine
STORAGE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
    """This machine's float32 matmul rate (FLOP/s): the best of a few n x n products (< 1 s)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# -- the jobs ------------------------------------------------------------------------------------------
def expand(overrides: list[str]) -> list[list[str]]:
    """Hydra's basic sweeper: every combination of the comma lists (and range/choice sweeps) of
    ``overrides``, in order (the first key varies slowest)."""
    lists = []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        lists.append([f"{key}={v}" for v in values])
    return [list(c) for c in itertools.product(*lists)]


def job_overrides(argv: list[str]) -> list[list[str]]:
    """The overrides of each job ``weightsim-run argv`` runs (one job without -m)."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    args = [a for a in argv if a not in ("-m", "--multirun")]
    if not multirun:
        return [args]
    cfg = compose("config", overrides=[a for a in args if "," not in a.partition("=")[2]], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True) if cfg.hydra.sweeper.get("params") else {}
    given = {a.lstrip("+~").partition("=")[0] for a in args}
    swept = [f"{k}={v}" for k, v in (params or {}).items() if k not in given]
    return expand(swept + args)


# -- one job -------------------------------------------------------------------------------------------
@dataclass
class NetCosts:
    """What one net of an (architecture, data shape, training) costs, measured once."""

    memory: PopulationMemory
    step_flops: int  # one SGD step of one net (forward + backward of a batch)
    sample_flops: int  # one forward pass of one sample (evaluation)
    features_flops: int  # HTT: chain features of one net
    feature_dims: list[int] = field(default_factory=list)  # per chain, then the raw layers' dim
    state: dict[str, tuple[int, bool]] = field(default_factory=dict)  # name -> (numel, floating)


def net_costs(build, shape: DataShape, zc: ZooConfig, chain_opts: dict) -> NetCosts:
    from weightsim.chains import ChainOptions, chain_features

    memory = measure_population(build, shape, zc, torch.device("cpu"))
    with torch.random.fork_rng(devices=[]):
        net = build()
    xb = shape.sample(zc.batch_size)
    step = flops(lambda: net(xb).float().logsumexp(-1).sum().backward())
    with torch.no_grad():
        sample = flops(lambda: net.eval()(shape.sample(64))) // 64
        feats: list = []
        feat = flops(lambda: feats.extend(chain_features(net, ChainOptions(**chain_opts))))
    state = {k: (v.numel(), v.is_floating_point()) for k, v in net.state_dict().items()}
    dims = [f.numel() for f in feats] + [sum(p.numel() for p in net.parameters())]
    return NetCosts(memory, step, sample, feat, dims, state)


@dataclass
class JobPlan:
    job: str
    zoo: str
    nets: int
    steps: int
    population: int
    populations: int
    chunk: int
    peak: int
    data: int
    train_flops: float
    disk: float
    budget: float
    memory: PopulationMemory
    zoo_nets: int = 0  # every net of the zoo (all seed blocks): what its HTT featurizes
    htt_flops: float = 0.0


def plan_job(cfg, costs_cache: dict) -> JobPlan:
    """The plan of one composed job config."""
    choices = cfg.hydra.runtime.choices
    ds = OmegaConf.to_container(cfg.dataset, resolve=True)
    shape, _ = data_shape(ds)
    arch_cfg = OmegaConf.to_container(cfg.arch, resolve=True)
    for k, v in shape.info.items():
        if k in arch_cfg and arch_cfg[k] is None:
            arch_cfg[k] = v
    zoo_cfg = OmegaConf.to_container(cfg.zoo, resolve=True)
    zc = ZooConfig(**zoo_cfg)
    chain_opts = OmegaConf.to_container(cfg.chains, resolve=True)
    key = repr((ds, arch_cfg, zc.batch_size, zc.momentum, zc.vectorize, chain_opts))
    if key not in costs_cache:
        costs_cache[key] = net_costs(builder(instantiate(arch_cfg), shape.input_shape, shape.classes_per_task),
                                     shape, zc, chain_opts)
    c = costs_cache[key]
    tasks = len(shape.train)
    nets = tasks * zc.seeds
    steps = zc.steps if zc.steps is not None else max(1, math.ceil(zc.epochs * max(shape.train) / zc.batch_size))
    budget = zc.memory_budget_gb * 2**30
    k = min(zc.population_size, nets) if zc.population_size else c.memory.population_size(budget, nets)
    chunk = c.memory.eval_chunk(budget, k)
    # every net: its SGD steps, then one forward pass over its task's training and test samples
    train = zc.seeds * (tasks * steps * c.step_flops + sum(shape.train + shape.test) * c.sample_flops)
    dtype = zoo_cfg.get("dtype", "float32")  # zoo.dtype: the storage dtype (float32 where not set)
    per_net = sum(n * (STORAGE_BYTES[dtype] if fl else 8) for n, fl in c.state.values())
    try:
        HydraConfig.instance().set_config(cfg)
        zoo = Path(str(cfg.zoo_dir)).name
    except Exception:  # noqa: BLE001  (a zoo_dir that needs the job's run dir: name it by its choices)
        zoo = f"{choices.dataset}-{choices.arch}"
    return JobPlan("", zoo, nets, steps, k, math.ceil(nets / k), chunk, c.memory.peak(k, chunk), c.memory.data,
                   float(train), float(nets * per_net), budget, c.memory)


def htt_flops(costs: NetCosts, n: int, measures: list[str]) -> float:
    """Featurizing n nets (chain features) and their Grams (one N x N pass per chain and measure)."""
    dims = (costs.feature_dims[:-1] if "chain_gram" in measures else []) + \
        (costs.feature_dims[-1:] if "raw" in measures else [])
    return float(n * costs.features_flops + sum(2 * n * n * d for d in dims))


# -- the table -----------------------------------------------------------------------------------------
def gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB"


def gb(b: float) -> str:
    return f"{b / 1e9:.1f} GB" if b >= 1e9 else f"{b / 1e6:.0f} MB"


def hours(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def advice(j: JobPlan) -> list[str]:
    """What to change when a job does not fit one GPU."""
    if j.peak <= GPU_MEMORY:
        return []
    k = j.memory.population_size(GPU_MEMORY * 0.9, j.nets)
    if j.memory.train_peak(1) > GPU_MEMORY:
        return [f"{j.job}: even one net needs {gib(j.memory.train_peak(1))} (data {gib(j.data)}): a smaller "
                f"dataset.size or fewer tasks"]
    return [f"{j.job}: planned {gib(j.peak)} > {gib(GPU_MEMORY)}: zoo.memory_budget_gb=70 (or zoo.population_size={k})"]


def disk_advice(jobs: list[JobPlan], argv: list[str]) -> str:
    """What to change when the zoos do not fit the disk: a 2-byte storage dtype, and the largest zoo."""
    per_zoo: dict[str, float] = {}
    for j in jobs:
        per_zoo[j.zoo] = per_zoo.get(j.zoo, 0.0) + j.disk
    big = max(per_zoo, key=per_zoo.get)
    if any(a.startswith("zoo.dtype=") and not a.endswith("float32") for a in argv):
        return f"a larger disk (zoo {big}: {gb(per_zoo[big])})"
    half = sum(per_zoo.values()) / 2
    return (f"zoo.dtype=bfloat16 halves the zoos to {gb(half)}" +
            ("" if half <= DISK else f", still over: zoo {big} alone is {gb(per_zoo[big] / 2)} in bfloat16; "
             f"a larger disk, or fewer seeds (zoo.seeds / seed_blocks)"))


def render(jobs: list[JobPlan], rate: float, argv: list[str]) -> str:
    gpu = GPU_PEAK * GPU_FRACTION
    lines = [f"weightsim-plan {' '.join(argv)}",
             f"time here: FLOPs at this machine's float32 matmul rate, {rate / 1e9:.0f} GFLOP/s; GPU: {GPU_NAME} at "
             f"{GPU_FRACTION:.0%} of {GPU_PEAK / 1e12:.0f} TFLOP/s fp32 = {gpu / 1e12:.0f} TFLOP/s (lower bounds: "
             f"FLOPs of matmuls and convolutions only)", "",
             "| job | zoo | nets | SGD steps/net | population x count | peak memory | disk | train TFLOP | "
             "time here | time GPU |", "|---|---|---|---|---|---|---|---|---|---|"]
    for j in jobs:
        lines.append(f"| {j.job} | {j.zoo} | {j.nets} | {j.steps} | {j.population} x {j.populations} | {gib(j.peak)} "
                     f"(data {gib(j.data)}) | {gb(j.disk)} | {j.train_flops / 1e12:.1f} | "
                     f"{hours(j.train_flops / rate)} | {hours(j.train_flops / gpu)} |")
    zoos: dict[str, JobPlan] = {}
    for j in jobs:
        zoos.setdefault(j.zoo, j)
    lines += ["", "| HTT of zoo | nets | featurize + Gram TFLOP | time here | time GPU |", "|---|---|---|---|---|"]
    for z, j in zoos.items():
        lines.append(f"| {z} | {j.zoo_nets} | {j.htt_flops / 1e12:.1f} | {hours(j.htt_flops / rate)} | "
                     f"{hours(j.htt_flops / gpu)} |")
    total = sum(j.train_flops for j in jobs) + sum(j.htt_flops for j in zoos.values())
    disk = sum(j.disk for j in jobs)
    peak = max(j.peak for j in jobs)
    lines += ["", f"total: {sum(j.nets for j in jobs)} nets, {total / 1e12:.1f} TFLOP; time here "
              f"{hours(total / rate)}, on one GPU {hours(total / gpu)}; largest planned peak {gib(peak)}; "
              f"disk {gb(disk)}"]
    fixes = [a for j in jobs for a in advice(j)]
    lines.append(f"one 80 GB GPU ({gib(GPU_MEMORY)} usable): " + ("every job fits" if not fixes else "does NOT fit"))
    lines += [f"  change: {a}" for a in fixes]
    fits_disk = disk <= DISK
    lines.append(f"a 64 GB disk: {'fits' if fits_disk else 'does NOT fit'} ({gb(disk)} of zoos)")
    if not fits_disk:
        lines.append("  change: " + disk_advice(jobs, argv))
    return "\n".join(lines)


def plan(argv: list[str]) -> str:
    from weightsim.config import CONF
    from weightsim.stages import register_configs
    from weightsim.sweep import name_jobs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = job_overrides(argv)
        cache: dict = {}
        jobs, records = [], []
        for i, ov in enumerate(overrides):
            cfg = compose("config", overrides=ov, return_hydra_config=True)
            jobs.append((plan_job(cfg, cache), cfg))
            records.append({"num": i, "overrides": ov})
    name_jobs(records)
    for (j, _), r in zip(jobs, records):
        j.job = r["job"]
    per_zoo: dict[str, int] = {}
    for j, _ in jobs:
        per_zoo[j.zoo] = per_zoo.get(j.zoo, 0) + j.nets
    for j, cfg in jobs:
        j.zoo_nets = per_zoo[j.zoo]
        costs = next(c for k, c in cache.items() if c.memory is j.memory)
        j.htt_flops = htt_flops(costs, j.zoo_nets, list(cfg.protocol.measures))
    return render([j for j, _ in jobs], matmul_rate(), argv)
