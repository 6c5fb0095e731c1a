"""`make bench`: population training vs one net per Trainer run, and a paper-size extrapolation.

For each architecture (by its name in conf/arch, default mlp4 and plainnet5) it trains the same
small workload both ways, in one process, side by side:

- *one net per Trainer run*: what a script that loops over seeds does: every net is a plain
  LightningModule fed by a shuffling DataLoader, with its own ``lightning.Trainer`` and fit
  (checkpointing, logger and progress bar off, as in the population path), then evaluated;
- *population*: the nets of the workload trained together (population size from the memory
  budget, ``zoo.memory_budget_gb``), several per Trainer run.

Both train and evaluate exactly the same nets (same tasks, seeds, steps, accuracies computed), so
the nets/s ratio is the speed-up per net. Beside it stands the *compute ceiling*: the matmul and
convolution FLOPs one net of the workload needs (torch's FlopCounterMode) at this machine's best
measured matmul rate, i.e. the most nets/s any way of training could reach here, and so the
largest speed-up over one net per run that is physically possible on this machine. It then measures the time of one SGD step at CIFAR-100
input shape (3 x 32 x 32, synthetic tensors: only the shape matters for speed), for one net and
for a population, and extrapolates the time of one paper-size zoo (50 tasks x 100 seeds).

An arch name is a config of conf/arch (the same configs `weightsim-zoo arch=...` uses).
Run from the repository root: ``python -m bench.zoo [--archs mlp4,plainnet5,mlp]`` (bench/ is not
part of the installed package).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.functional.classification import multiclass_accuracy

from weightsim.config import CONF, choices
from weightsim.data.tasks import TaskSet, build_taskset
from weightsim.zoo.generate import ZooConfig, generate_zoo, size_population, train_population
from weightsim.zoo.heap import reuse_freed_memory
from weightsim.zoo.population import init_member, member_seeds, population_module
from weightsim.zoo.stacked import why_not_stackable
from weightsim.trainer import silent_trainer
from weightsim.zoo.store import ZooReader

PAPER_NETS = 50 * 100  # tasks x seeds of one paper zoo
PAPER_TRAIN_PER_TASK = 1000  # CIFAR-100, 2 classes x 500 training images


def arch_factory(name: str) -> tuple[Callable[..., nn.Module], bool, str]:
    """(builder taking input_shape and num_classes, wants image input, where it came from)."""
    if name not in choices("arch"):
        raise SystemExit(f"unknown arch '{name}': choose from {', '.join(choices('arch'))}")
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "arch" / f"{name}.yaml"), resolve=True)
    cfg["_partial_"] = True
    image = str(cfg["_target_"]).startswith("weightsim.nets.conv.")  # conv nets take C x H x W
    return instantiate(cfg), image, f"conf/arch/{name}.yaml"


def digits_tasks(image: bool, tasks: int) -> TaskSet:
    from weightsim.data.digits import digits

    return digits(train_tasks=tasks, unseen_tasks=0, image=image)


def cifar_shape_tasks(image: bool, seed: int = 0, tasks: int = 2, test_per_task: int = 50, side: int = 32,
                      classes: int = 2, train_per_task: int = PAPER_TRAIN_PER_TASK) -> TaskSet:
    """``tasks`` tasks of ``classes`` classes of synthetic samples at CIFAR-100 shape (3 x 32 x 32, or
    3072 flat; ``side`` 64: tiny ImageNet's), each with ``train_per_task`` training samples
    (CIFAR-100: 2 classes x 500) and ``test_per_task`` test samples: Gaussian noise around a random
    mean per class, so the nets have something to learn. Only the shape matters for speed."""
    per_class = (train_per_task + test_per_task) // classes
    n = classes * tasks * per_class
    g = torch.Generator().manual_seed(seed)
    y = np.repeat(np.arange(classes * tasks), per_class)
    means = 0.1 * torch.randn(classes * tasks, 3, side, side, generator=g)
    x = torch.randn(n, 3, side, side, generator=g) + means[torch.from_numpy(y)]
    x = x if image else x.flatten(1)
    return build_taskset(f"synthetic-{side}", x, y, [str(i) for i in range(classes * tasks)],
                         classes_per_task=classes, grouping="consecutive", train_tasks=tasks, unseen_tasks=0,
                         test_fraction=test_per_task / (train_per_task + test_per_task))


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so that wall-clock times measure it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(build: Callable[[], nn.Module], taskset: TaskSet, k: int, zc: ZooConfig,
                     steps: int = 3, vectorize: str = "auto") -> float:
    """Wall seconds of one SGD step (forward, backward, update) of a k-member population, after one
    warm-up step; no Trainer, so no per-run overhead is included."""
    nets = [(i % len(taskset.tasks), i) for i in range(k)]
    module = population_module(build, taskset, nets, replace(zc, vectorize=vectorize)).to(device_of(zc))
    opt = module.configure_optimizers()
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:
            sync(module.device)
            t0 = time.perf_counter()
        opt.zero_grad()
        module.training_step(torch.tensor(i), i).backward()
        opt.step()
    sync(module.device)
    return (time.perf_counter() - t0) / steps


def device_of(zc: ZooConfig) -> torch.device:
    return torch.device("cuda" if zc.accelerator in ("gpu", "cuda") else "cpu")


class OneNet(L.LightningModule):
    """The baseline a seed loop would write: one plain net, batches from a shuffling DataLoader."""

    def __init__(self, net: nn.Module, zc: ZooConfig):
        super().__init__()
        self.net, self.zc = net, zc

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> torch.Tensor:
        x, y = batch  # (B, *input_shape), (B,)
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.zc.lr, momentum=self.zc.momentum,
                               weight_decay=self.zc.weight_decay)


def train_one_per_run(build: Callable[[], nn.Module], taskset: TaskSet, task: int, seed: int,
                      zc: ZooConfig, steps: int) -> tuple[float, float]:
    """One net, one Trainer run (checkpointing, logger and progress bar off, as in the population
    path), then its train and test accuracy: the per-net work of a zoo, done one net at a time."""
    init_seed, data_seed = member_seeds(zc.base_seed, task, seed)
    t = taskset.tasks[task]
    loader = DataLoader(TensorDataset(taskset.x[t.train_idx], t.train_y), batch_size=zc.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(data_seed))
    module = OneNet(init_member(build, init_seed), zc)
    trainer = silent_trainer(max_steps=steps, accelerator=zc.accelerator, logger=False)
    trainer.fit(module, loader)
    module.eval()
    dev = next(module.parameters()).device
    with torch.no_grad():  # accuracy as the zoo counts it (torchmetrics, micro: share of correct predictions)
        accs = [float(multiclass_accuracy(module.net(taskset.x[i].to(dev)).argmax(-1), y.to(dev),
                                          num_classes=taskset.classes_per_task, average="micro"))
                for i, y in ((t.train_idx, t.train_y), (t.test_idx, t.test_y))]
    return accs[0], accs[1]


def net_flops(build: Callable[[], nn.Module], taskset: TaskSet, task: int, steps: int, batch_size: int) -> float:
    """Floating-point operations one net of the workload needs, counted by torch's FlopCounterMode
    (matmuls and convolutions only, so a lower bound): ``steps`` SGD steps (forward + backward of one
    batch) plus the forward passes over its training and test samples that score it."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng(devices=[]):
        net = build()
    t = taskset.tasks[task]
    with FlopCounterMode(display=False) as step:
        net(taskset.x[t.train_idx[:batch_size]]).sum().backward()
    with FlopCounterMode(display=False) as score, torch.no_grad():
        net(taskset.x[torch.cat([t.train_idx, t.test_idx])])
    return float(steps * step.get_total_flops() + score.get_total_flops())


GPU_SIZES = (2048, 4096, 8192, 16384)  # square matmuls that fill a GPU (16384^2 fp32: 1 GiB per matrix)
GPU_BUDGET_FRACTION = 0.7  # of the GPU memory free at start; the rest: CUDA context, cuDNN workspaces,
# the caching allocator's fragmentation, evaluation chunks and any error of the sizing estimate


def peak_flops(device: torch.device | str = "cpu", sizes: tuple[int, ...] | None = None,
               repeats: int = 5, tf32: bool = False) -> float:
    """The best float32 matmul rate (FLOP/s) measured on ``device``: square n x n matmuls (``sizes``;
    default 512-2048 on a CPU, 2048-16384 on a GPU, each only if three such matrices fit in half the
    free memory), the densest work a processor does, so no training step of any net runs faster per
    FLOP. ``tf32``: a GPU's TF32 tensor cores (float32 inputs, 10-bit mantissa products)."""
    cuda = torch.device(device).type == "cuda"
    sizes = sizes or (GPU_SIZES if cuda else (512, 1024, 2048))
    if cuda:
        sizes = tuple(n for n in sizes if 3 * 4 * n * n <= torch.cuda.mem_get_info()[0] / 2) or sizes[:1]
    best, before = 0.0, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for n in sizes:
            a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
            a @ b
            sync(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                a @ b
            sync(device)
            best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t0))  # n^3 multiply-adds
            del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return best


def require_cuda(what: str = "bench-gpu") -> None:
    """One ``error:`` line (exit 2) when torch cannot use a GPU, before any work."""
    if torch.cuda.is_available():
        return
    why = (f"torch {torch.__version__} is a CPU build (torch.version.cuda is None)" if torch.version.cuda is None
           else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU (driver? CUDA_VISIBLE_DEVICES?)")
    print(f"error: {what} needs a CUDA build of torch and a GPU: {why}; on a GPU machine install a CUDA torch "
          "into .venv (pip install torch --index-url https://download.pytorch.org/whl/cu128)", file=sys.stderr)
    sys.exit(2)


def gpu_budget_gb(fraction: float = GPU_BUDGET_FRACTION) -> tuple[float, str]:
    """The population memory budget on the current GPU: ``fraction`` of its free memory now
    (torch.cuda.mem_get_info), and the line that says so."""
    free, total = torch.cuda.mem_get_info()
    gb = fraction * free / 2**30
    return gb, (f"memory budget {gb:.1f} GiB = {fraction:g} x the {free / 2**30:.1f} GiB free of "
                f"{total / 2**30:.1f} GiB (torch.cuda.mem_get_info)")


def measure_paper_zoo(name: str, tasks: int, seeds: int, zc: ZooConfig, epochs: float) -> dict:
    """Generate a real zoo of ``tasks`` x ``seeds`` nets of ``name`` at CIFAR-100 shape (synthetic
    samples, PAPER_TRAIN_PER_TASK per task) into a temporary directory, exactly as `weightsim-zoo`
    does (populations, safetensors files, manifest), and report its wall time."""
    factory, image, origin = arch_factory(name)
    taskset = cifar_shape_tasks(image, tasks=tasks)
    build = partial(factory, input_shape=taskset.input_shape, num_classes=2)
    zcp = replace(zc, seeds=seeds, epochs=epochs)
    identity = {"dataset": {"name": "cifar-shape", "config": {"tasks": tasks}}, "arch": {"name": name, "config": {}},
                "tasks": [t.meta() for t in taskset.tasks], "config_hash": "bench",
                "input_shape": list(taskset.input_shape), "num_classes": 2}
    print(f"\npaper zoo, measured: {tasks} tasks x {seeds} seeds of {name} ({origin}) at CIFAR-100 shape "
          f"{tuple(taskset.input_shape)}, {epochs:g} epochs of {PAPER_TRAIN_PER_TASK} samples, batch "
          f"{zc.batch_size}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        generate_zoo(build, taskset, zcp, Path(d) / "zoo", identity, progress=True)
        wall = time.perf_counter() - t0
        rows = ZooReader(Path(d) / "zoo").rows
        size = sum(f.stat().st_size for f in (Path(d) / "zoo" / "weights").glob("*.safetensors"))
    n = len(rows)
    print(f"  {n} nets in {hours(wall)} ({n / wall:.2f} nets/s), {size / 2**30:.2f} GiB of safetensors, "
          f"{sum(r['diverged'] for r in rows)} flagged diverged", flush=True)
    return {"arch": name, "paper_zoo_nets": n, "paper_zoo_s": wall}


def hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def bench_arch(name: str, single_nets: int, pop_nets: int, zc: ZooConfig, out: list[str], peak: float) -> dict:
    factory, image, origin = arch_factory(name)
    tasks = digits_tasks(image, 2)
    build = partial(factory, input_shape=tasks.input_shape, num_classes=2)
    seeds = math.ceil(pop_nets / len(tasks.tasks))
    nets = [(t.id, s) for t in tasks.tasks for s in range(seeds)][:pop_nets]
    steps = math.ceil(zc.epochs * max(len(t.train_idx) for t in tasks.tasks) / zc.batch_size)
    print(f"\n{name}: {origin}; workload: digits{' as 1x8x8' if image else ''}, 2-class tasks, "
          f"{zc.epochs:g} epoch = {steps} SGD steps of batch {zc.batch_size} per net, then train/test accuracy",
          flush=True)

    # one net per Trainer run (first; its first run is a warm-up and is dropped from the rate)
    t_single = []
    for t, s in nets[:single_nets + 1]:
        t0 = time.perf_counter()
        train_one_per_run(build, tasks, t, s, zc, steps)
        t_single.append(time.perf_counter() - t0)
    single_per_net = float(np.median(t_single[1:]))

    sizing = size_population(build, tasks, zc, len(nets))
    t0 = time.perf_counter()
    for i in range(0, len(nets), sizing.population_size):
        train_population(build, tasks, nets[i:i + sizing.population_size], zc, eval_chunk=sizing.eval_chunk)
    pop_per_net = (time.perf_counter() - t0) / len(nets)
    ratio = single_per_net / pop_per_net
    # compute ceiling: no implementation trains a net faster than its FLOPs at the peak matmul rate
    flops = float(np.mean([net_flops(build, tasks, t, steps, zc.batch_size) for t in range(len(tasks.tasks))]))
    ceiling = single_per_net * peak / flops
    row = {"arch": name, "single_nets_s": 1 / single_per_net, "pop_nets_s": 1 / pop_per_net, "ratio": ratio,
           "population_size": sizing.population_size, "net_gflop": flops / 1e9, "ceiling_ratio": ceiling}
    print(f"  one net per Trainer run: {1 / single_per_net:8.2f} nets/s  (median of {single_nets} runs, "
          f"{single_per_net:.2f} s per net)")
    print(f"  population             : {1 / pop_per_net:8.2f} nets/s  ({len(nets)} nets, {sizing})")
    print(f"  speed-up per net       : {ratio:8.1f} x", flush=True)
    print(f"  compute ceiling        : {peak / flops:8.2f} nets/s  ({flops / 1e9:.3f} GFLOP per net of matmuls "
          f"and convolutions at {peak / 1e9:.0f} GFLOP/s, this machine's best matmul rate): no way of "
          f"training can beat {ceiling:.1f} x here", flush=True)

    # paper-size extrapolation from step times at CIFAR-100 shape
    paper = cifar_shape_tasks(image)
    pbuild = partial(factory, input_shape=paper.input_shape, num_classes=2)
    psize = size_population(pbuild, paper, zc, PAPER_NETS)
    k = min(psize.population_size, 32)
    t1_small = seconds_per_step(build, tasks, 1, zc)
    overhead = max(0.0, single_per_net - steps * t1_small)  # Trainer set-up, fit loop, evaluation
    t1 = seconds_per_step(pbuild, paper, 1, zc)
    modes = {m: seconds_per_step(pbuild, paper, k, zc, vectorize=m) for m in ("stacked", "vmap", "loop")
             if (m != "stacked" or why_not_stackable(pbuild(), tuple(paper.input_shape)) is None)
             and (m != "loop" or image)}  # zoo.vectorize; loop only for convs
    best = min(modes, key=modes.get)
    tk = modes[best]
    psteps = math.ceil(zc.paper_epochs * PAPER_TRAIN_PER_TASK / zc.batch_size)
    single_total = PAPER_NETS * (overhead + psteps * t1)
    pop_total = PAPER_NETS * psteps * tk / k + math.ceil(PAPER_NETS / psize.population_size) * overhead
    print(f"  paper zoo ({PAPER_NETS} nets at CIFAR-100 shape {tuple(paper.input_shape)}, {psteps} steps/net "
          f"= {zc.paper_epochs:g} epochs of {PAPER_TRAIN_PER_TASK} samples, batch {zc.batch_size}):")
    steps_txt = "; ".join(f"zoo.vectorize={m}: {v * 1e3:.1f} ms ({v / k * 1e3:.2f} ms per net)"
                          for m, v in modes.items())
    print(f"    step of one net {t1 * 1e3:.1f} ms; step of {k} nets: {steps_txt}; per-run overhead "
          f"{overhead:.2f} s")
    print(f"    extrapolated: population {hours(pop_total)} (populations of {psize.population_size}, "
          f"zoo.vectorize={best}), one net per run {hours(single_total)}", flush=True)
    row.update(paper_pop_s=pop_total, paper_single_s=single_total)
    out.append(f"| {name} | {1 / single_per_net:.2f} | {1 / pop_per_net:.2f} | {ratio:.1f}x | {ceiling:.1f}x | "
               f"{hours(pop_total)} | {hours(single_total)} |")
    return row


def tasks_by_seeds(text: str) -> tuple[int, int]:
    """'50x100' -> (50, 100): the size of a zoo, tasks x seeds, each at least 1."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"'{text}' is not TASKSxSEEDS, e.g. 50x100")
    return int(parts[0]), int(parts[1])


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="mlp4,plainnet5,mlp", help="arch names (conf/arch/<name>.yaml)")
    ap.add_argument("--single-nets", type=int, default=4, help="nets timed one per Trainer run")
    ap.add_argument("--pop-nets", type=int, default=96, help="nets timed as populations")
    ap.add_argument("--epochs", type=float, default=1.0, help="epochs of the small workload")
    ap.add_argument("--paper-epochs", type=float, default=ZooConfig.epochs, help="epochs per paper net")
    ap.add_argument("--memory-budget-gb", type=float, default=None,
                    help=f"population memory budget (default: {ZooConfig.memory_budget_gb:g} on a CPU, "
                         f"{GPU_BUDGET_FRACTION:g} x the free memory on a GPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--system-heap", action="store_true",
                    help="leave glibc's malloc as it is (default: zoo.reuse_freed_memory, as a zoo job does)")
    ap.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"), help="where both ways train")
    ap.add_argument("--paper-zoo", default=None, metavar="TASKSxSEEDS", type=tasks_by_seeds,
                    help="also generate a zoo of that many nets at CIFAR-100 shape and time it (e.g. 50x100)")
    ap.add_argument("--paper-zoo-arch", default="mlp4", help="arch of --paper-zoo")
    a = ap.parse_args(argv)
    if a.accelerator == "gpu":
        require_cuda()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    heap = "system malloc" if a.system_heap else ("freed memory reused" if reuse_freed_memory()
                                                  else "system malloc (no glibc)")
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    budget, budget_txt = a.memory_budget_gb, f"memory budget {a.memory_budget_gb} GiB (--memory-budget-gb)"
    if budget is None:
        budget, budget_txt = ((gpu_budget_gb() if a.accelerator == "gpu" else
                               (ZooConfig.memory_budget_gb, f"memory budget {ZooConfig.memory_budget_gb:g} GiB")))
    zc = ZooConfig(epochs=a.epochs, memory_budget_gb=budget, accelerator=a.accelerator)
    zc.paper_epochs = a.paper_epochs  # type: ignore[attr-defined]
    where = f"GPU {torch.cuda.get_device_name()}" if a.accelerator == "gpu" else "CPU"
    print(f"weightsim bench: torch {torch.__version__}, {torch.get_num_threads()} threads, {where}, {heap} "
          f"(both ways of training); {budget_txt}")
    peak = peak_flops(device_of(zc))
    if a.accelerator == "gpu":  # TF32: what cuDNN convolutions use by default, and matmuls when allowed
        tf32 = peak_flops(device_of(zc), tf32=True)
        print(f"peak matmul rate (square up to {max(GPU_SIZES)}^2): fp32 {peak / 1e12:.1f} TFLOP/s, TF32 "
              f"{tf32 / 1e12:.1f} TFLOP/s; the compute ceilings below use the larger", flush=True)
        peak = max(peak, tf32)
    table = ["| arch | one net per run (nets/s) | population (nets/s) | speed-up | compute ceiling "
             "| paper zoo, population | paper zoo, one per run |", "|---|---|---|---|---|---|---|"]
    rows = [bench_arch(n.strip(), a.single_nets, a.pop_nets, zc, table, peak) for n in a.archs.split(",") if n]
    print("\n" + "\n".join(table))
    if a.paper_zoo:
        tasks, seeds = a.paper_zoo
        rows.append(measure_paper_zoo(a.paper_zoo_arch, tasks, seeds, zc, a.paper_epochs))
    return rows


if __name__ == "__main__":
    main()
