"""What the checksum check on every read costs: a zoo of random nets written with ``ZooWriter``, read
whole with ``ZooReader(verify=True)`` and ``verify=False``, and the SHA-256 of its files alone.

    python -m bench.verify                      # 300 MLPs of the digits default (8x8 -> 32 x3 -> 2)
    python -m bench.verify --arch mlp4 --input 3 32 32 --nets 300   # the paper's MLP-4 at 32 x 32

Prints the bytes, the best of ``--repeats`` timings of each, and the check's share of a read.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import tempfile
import time
from pathlib import Path

import torch

from weightsim.nets.mlp import MLP
from weightsim.zoo.store import ZooReader, ZooWriter

ARCHS = {"mlp": dict(hidden=32, depth=4), "mlp4": dict(hidden=500, depth=4)}


def write_zoo(root: Path, arch: str, input_shape: tuple[int, ...], nets: int, per_file: int) -> int:
    """A zoo of ``nets`` random nets (2 classes), ``per_file`` nets per population file; returns its bytes."""
    net = MLP(input_shape=input_shape, num_classes=2, **ARCHS[arch])
    writer = ZooWriter(root, {"dataset": {"name": "bench"}, "arch": {"name": arch}, "training": {}})
    for start in range(0, nets, per_file):
        k = min(per_file, nets - start)
        stacked = {n: torch.randn(k, *p.shape) for n, p in net.state_dict().items()}
        rows = [{"task": i % 2, "seed": i, "role": "train", "diverged": False} for i in range(start, start + k)]
        writer.write(f"pop{start:05d}", stacked, rows)
    return sum(f.stat().st_size for f in (root / "weights").glob("*.safetensors"))


def best(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=list(ARCHS), default="mlp")
    ap.add_argument("--input", type=int, nargs="+", default=[1, 8, 8])
    ap.add_argument("--nets", type=int, default=300)
    ap.add_argument("--per-file", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "zoo"
        size = write_zoo(root, a.arch, tuple(a.input), a.nets, a.per_file)
        files = sorted((root / "weights").glob("*.safetensors"))
        hash_only = best(lambda: [hashlib.sha256(f.read_bytes()).hexdigest() for f in files], a.repeats)
        plain = best(lambda: ZooReader(root, verify=False).load(), a.repeats)
        checked = best(lambda: ZooReader(root, verify=True).load(), a.repeats)
    mib = size / 2**20
    print(f"{a.nets} {a.arch} nets (input {'x'.join(map(str, a.input))}) in {math.ceil(a.nets / a.per_file)} files, "
          f"{mib:.1f} MiB; best of {a.repeats}")
    print(f"read + sha256 of the files: {hash_only * 1e3:.1f} ms ({mib / hash_only:.0f} MiB/s)")
    print(f"ZooReader.load, verify=False: {plain * 1e3:.1f} ms; verify=True: {checked * 1e3:.1f} ms "
          f"(+{(checked - plain) * 1e3:.1f} ms, {100 * (checked - plain) / plain:+.0f} %)")


if __name__ == "__main__":
    main()
