"""Benchmarks of chain featurization: batched zoo path against a per-net loop, and peak memory.

    python -m bench.chains                 # 1000 plainnet5 nets on 3x32x32, batched vs loop
    python -m bench.chains --memory        # peak memory of one plainnet5 (all chains)

Both use the default ChainOptions (budget, sketch size) unless told otherwise; random weights
(the cost does not depend on training). Run from the repository root (bench/ is not part of the
installed package).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from weightsim.chains.core import chain_features, zoo_chain_features
from weightsim.chains.options import ChainOptions
from weightsim.nets.conv import PlainNet

ROOT = Path(__file__).resolve().parent.parent  # the repository: the child imports bench.chains from it


def random_zoo(template: nn.Module, n: int, seed: int = 0) -> dict[str, Tensor]:
    """n random nets of ``template``'s architecture, stacked: name -> (n, *shape)."""
    g = torch.Generator().manual_seed(seed)
    state = dict(template.named_parameters()) | dict(template.named_buffers())
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v.detach().expand(n, *v.shape).clone()
        elif k.endswith("running_var"):
            out[k] = torch.rand(n, *v.shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(n, *v.shape, generator=g) * 0.1
    return out


def _load(template: nn.Module, stacked: dict[str, Tensor], i: int) -> nn.Module:
    state = template.state_dict()  # keeps the version metadata BatchNorm reads when loading
    state.update({k: v[i] for k, v in stacked.items()})
    template.load_state_dict(state)
    return template


def bench(nets: int = 1000, input_shape: tuple[int, ...] = (3, 32, 32), opts: ChainOptions | None = None,
          loop_nets: int | None = None) -> dict:
    """Time to featurize ``nets`` plainnet5 nets batched (vmap) and one at a time, in one run.

    loop_nets: time the loop on the first loop_nets nets only and scale to ``nets`` (reported).
    """
    opts = opts or ChainOptions()
    torch.manual_seed(0)
    template = PlainNet(input_shape, 10).eval()
    stacked = random_zoo(template, nets)
    zoo_chain_features(template, {k: v[:2] for k, v in stacked.items()}, opts)  # warm-up
    t0 = time.perf_counter()
    batched = zoo_chain_features(template, stacked, opts)
    t_batched = time.perf_counter() - t0
    m = nets if loop_nets is None else min(loop_nets, nets)
    t0 = time.perf_counter()
    for i in range(m):
        single = chain_features(_load(template, stacked, i), opts)
    t_loop = (time.perf_counter() - t0) * nets / m
    same = all(torch.allclose(a, b[m - 1], rtol=1e-4, atol=1e-6) for a, b in zip(single, batched))
    return {"nets": nets, "input_shape": list(input_shape), "batched_s": round(t_batched, 3),
            "loop_s": round(t_loop, 3), "loop_measured_nets": m, "ratio_loop_over_batched": round(t_loop / t_batched, 2),
            "batched_equals_loop": same, "feature_dims": [int(f.shape[1]) for f in batched],
            "threads": torch.get_num_threads()}


def _status_mb(key: str) -> float:
    """A line of /proc/self/status (VmRSS: current, VmHWM: peak resident set), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _memory_child(input_shape: tuple[int, ...], opts: dict) -> dict:
    torch.manual_seed(0)
    chain_features(PlainNet((3, 4, 4), 10).eval(), ChainOptions(**opts))  # warm-up of torch's kernels, tiny
    net = PlainNet(input_shape, 10).eval()
    gc.collect()
    _reset_peak()  # Linux: VmHWM := current RSS, so the peak below is this computation's own
    base = _status_mb("VmRSS")
    feats = chain_features(net, ChainOptions(**opts))
    peak = _status_mb("VmHWM")
    return {"input_shape": list(input_shape), "chains": len(feats), "feature_dims": [f.numel() for f in feats],
            "rss_before_mb": round(base, 1), "rss_peak_mb": round(peak, 1), "peak_increase_mb": round(peak - base, 1)}


def memory_peak(input_shape: tuple[int, ...] = (3, 32, 32), **opts) -> dict:
    """Peak resident memory of chain features of one plainnet5, measured in a fresh subprocess
    (Linux /proc): the resident set before (after imports and a warm-up), the peak resident set
    during the computation (VmHWM, reset just before), and their difference, MiB."""
    code = (f"import json; from bench.chains import _memory_child; "
            f"print(json.dumps(_memory_child({tuple(input_shape)!r}, {opts!r})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", type=int, default=1000)
    ap.add_argument("--loop-nets", type=int, default=None, help="time the loop on this many nets and scale")
    ap.add_argument("--size", type=int, default=32, help="input H = W (3 channels)")
    ap.add_argument("--memory", action="store_true", help="measure peak memory of one net instead")
    a = ap.parse_args(argv)
    shape = (3, a.size, a.size)
    if a.memory:
        r = memory_peak(shape)
        print(f"plainnet5 {shape}: chain features of all {r['chains']} chains, default budget: "
              f"peak RSS {r['rss_peak_mb']} MiB, {r['peak_increase_mb']} MiB above the {r['rss_before_mb']} MiB "
              f"resident after imports (torch itself)")
    else:
        r = bench(a.nets, shape, loop_nets=a.loop_nets)
        print(f"plainnet5 {shape}, {r['nets']} nets, default ChainOptions, {r['threads']} threads: "
              f"batched {r['batched_s']} s, per-net loop {r['loop_s']} s"
              + (f" (measured on {r['loop_measured_nets']} nets, scaled)" if r['loop_measured_nets'] != r['nets'] else "")
              + f": loop / batched = {r['ratio_loop_over_batched']}x (same features: {r['batched_equals_loop']})")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
