"""The GPU check (bench/gpu_check.sh): paper-scale populations of every image arch, timed on one GPU.

For each paper image zoo (tiny ImageNet: 64 x 64 x 3, 4-class tasks of 2 000 training images;
CIFAR-100: 32 x 32 x 3, 2-class tasks of 1 000) and each arch the paper trains on it, it builds the
population one seed-block job of ``scale=paper`` would train at once (its size from the memory
budget: ``scale=paper``'s 40 GiB, or less when less is free), on synthetic samples at that shape,
and runs up to ``--steps`` SGD steps (or ``--seconds``) and one evaluation of every member, as
``train_population`` does. It prints per arch: population size, the time to draw its members (on
the CPU, as a zoo job does) and move them to the GPU, steps/s, member-steps/s, the peak memory
torch allocated (``torch.cuda.max_memory_allocated``) beside the sizing's estimate, and the time
one seed block (25 seeds x every task, 30 epochs) would take at that rate; exit 1 when a case fails (out of
memory, say), after the others ran.

    python -m bench.gpu_check [--steps 300] [--seconds 25] [--cases tiny:mlp4,cifar:resnet5]
    python -m bench.gpu_check --dry     # tiny sizes on the CPU: the plumbing only, no GPU numbers
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
import traceback
from dataclasses import dataclass
from functools import partial

import torch

from bench.zoo import arch_factory, cifar_shape_tasks, gpu_budget_gb, hours, require_cuda, sync
from weightsim.zoo.generate import ZooConfig, size_population
from weightsim.zoo.population import population_module

PAPER_BUDGET_GB = 40.0  # conf/scale/paper.yaml: zoo.memory_budget_gb
BLOCK_SEEDS = 25  # conf/size/*_paper.yaml: seed blocks of 25


@dataclass
class Shape:
    """One paper image dataset as a job of ``scale=paper`` sees it."""

    side: int  # images are 3 x side x side
    classes: int  # classes per task
    train_per_task: int  # training images per task
    tasks: int  # training + unseen tasks (every one gets a zoo net)
    archs: tuple[str, ...]  # the archs the paper trains on it


SHAPES = {"tiny": Shape(64, 4, 2000, 50, ("mlp4", "plainnet5")),  # Fig. 2
          "cifar": Shape(32, 2, 1000, 50, ("mlp4", "plainnet5", "plainnet6", "resnet5", "resnet_mlp12"))}  # 3-5, T2
# every case, those whose members take long to draw (mlp4: 8-25 MiB of weights each) last
CASES = [("cifar", "plainnet5"), ("cifar", "plainnet6"), ("cifar", "resnet5"), ("tiny", "plainnet5"),
         ("cifar", "resnet_mlp12"), ("cifar", "mlp4"), ("tiny", "mlp4")]


def check_case(shape_name: str, arch: str, steps: int, seconds: float, budget_gb: float, dry: bool) -> dict:
    """Train one paper-scale population of ``arch`` at ``shape_name``'s shape for up to ``steps`` SGD
    steps (or ``seconds``), then evaluate every member once; returns what was measured."""
    shape = SHAPES[shape_name]
    side = 8 if dry else shape.side  # --dry: 3 x 8 x 8 images, a few samples
    factory, image, _ = arch_factory(arch)
    taskset = cifar_shape_tasks(image, tasks=4, side=side, classes=shape.classes,
                                train_per_task=64 if dry else shape.train_per_task, test_per_task=48)
    build = partial(factory, input_shape=taskset.input_shape, num_classes=shape.classes)
    zc = ZooConfig(accelerator="cpu" if dry else "gpu", memory_budget_gb=budget_gb, seeds=BLOCK_SEEDS,
                   population_size=4 if dry else None)
    device = torch.device("cpu" if dry else "cuda")
    block = shape.tasks * BLOCK_SEEDS  # nets of one seed-block job
    sizing = size_population(build, taskset, zc, block)
    k = sizing.population_size
    if not dry:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t_build = time.perf_counter()  # each member drawn on the CPU from its own seed, as a zoo job does
    module = population_module(build, taskset, [(i % len(taskset.tasks), i) for i in range(k)], zc).to(device)
    sync(device)
    build_s = time.perf_counter() - t_build
    opt = module.configure_optimizers()
    done, t0 = 0, 0.0
    for i in range(steps + 2):  # two warm-up steps (cuDNN's algorithm search, the allocator's first blocks)
        if i == 2:
            sync(device)
            t0 = time.perf_counter()
        opt.zero_grad()
        module.training_step(torch.tensor(i), i).backward()
        opt.step()
        if i >= 2:
            done += 1
            if done % 10 == 0:
                sync(device)
                if time.perf_counter() - t0 > seconds:
                    break
    sync(device)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    tasks = [taskset.tasks[i % len(taskset.tasks)] for i in range(k)]
    pad = lambda attr: torch.nn.utils.rnn.pad_sequence([getattr(t, attr) for t in tasks], batch_first=True)  # noqa: E731
    acc, _ = module.evaluate(pad("train_idx"), pad("train_y"), [len(t.train_idx) for t in tasks],
                             sizing.eval_chunk)
    sync(device)
    eval_s = time.perf_counter() - t1
    rate = done / train_s
    paper_steps = math.ceil(zc.epochs * shape.train_per_task / zc.batch_size)
    block_s = math.ceil(block / k) * (build_s + paper_steps / rate + eval_s)  # (the test-set evaluation left out)
    return {"shape": shape_name, "arch": arch, "input": tuple(taskset.input_shape), "k": k, "steps": done,
            "steps_s": rate, "member_steps_s": k * rate, "build_s": build_s, "eval_s": eval_s,
            "block_s": block_s, "block": block,
            "peak_gib": None if dry else torch.cuda.max_memory_allocated() / 2**30, "budget_gib": budget_gb,
            "est_gib": sizing.peak_bytes / 2**30, "finite": bool(torch.isfinite(acc).all())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="SGD steps per case (at most)")
    ap.add_argument("--seconds", type=float, default=15.0, help="time per case after which it stops early")
    ap.add_argument("--cases", default=None, help="e.g. tiny:mlp4,cifar:resnet5 (default: every arch of both)")
    ap.add_argument("--dry", action="store_true", help="tiny sizes on the CPU: checks the plumbing, no GPU")
    a = ap.parse_args(argv)
    cases = [tuple(c.split(":")) for c in a.cases.split(",")] if a.cases else CASES
    for s, arch in cases:
        if s not in SHAPES or arch not in SHAPES[s].archs:
            print(f"error: unknown case {s}:{arch}: choose from "
                  f"{', '.join(f'{n}:{x}' for n, sh in SHAPES.items() for x in sh.archs)}", file=sys.stderr)
            return 2
    if a.dry:
        budget, budget_txt = 0.25, "--dry: on the CPU, populations of 4, 3 x 8 x 8 images"
    else:
        require_cuda("bench/gpu_check.sh")
        budget, budget_txt = gpu_budget_gb()
        if budget > PAPER_BUDGET_GB:
            budget, budget_txt = PAPER_BUDGET_GB, f"memory budget {PAPER_BUDGET_GB:g} GiB (scale=paper; {budget_txt})"
    where = "CPU (--dry)" if a.dry else f"GPU {torch.cuda.get_device_name()}"
    print(f"gpu check: torch {torch.__version__}, {where}; {budget_txt}", flush=True)
    print("| data | arch | input | population | build (s) | steps | steps/s | member-steps/s | eval (s) | peak GiB "
          "(estimate) | one seed block |\n|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    failed = 0
    for s, arch in cases:
        try:
            r = check_case(s, arch, 3 if a.dry else a.steps, a.seconds, budget, a.dry)
        except Exception as e:  # noqa: BLE001  (out of memory, say: the other cases still run)
            failed += 1
            traceback.print_exc()
            print(f"| {s} | {arch} | failed: {type(e).__name__}: {str(e).splitlines()[0][:200]} |", flush=True)
            continue
        finally:
            gc.collect()  # the last case's population, before the next one is sized into the free memory
            if not a.dry:
                torch.cuda.empty_cache()
        peak = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"| {s} | {arch} | {'x'.join(map(str, r['input']))} | {r['k']} | {r['build_s']:.1f} | {r['steps']} "
              f"| {r['steps_s']:.1f} | {r['member_steps_s']:.0f} | {r['eval_s']:.2f} | {peak} ({r['est_gib']:.2f}) "
              f"| {'- (--dry)' if a.dry else hours(r['block_s'])} ({r['block']} nets) |", flush=True)
        if not r["finite"]:
            failed += 1
            print(f"failed: {s}:{arch}: accuracies not finite", file=sys.stderr)
    print(f"gpu check: {len(cases) - failed} of {len(cases)} cases ok", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
