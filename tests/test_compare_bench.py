"""Smoke test of `python -m bench.compare` at tiny sizes: it runs, measures both ways and says they
agree (no timing assertions: speed is what the bench prints, never what a test checks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_compare_bench_runs_both_ways_and_they_agree():
    args = ["--d", "600", "--neurons", "40", "--shared", "36", "--k", "8", "--simple", "4",
            "--direct-neurons", "2", "--cka-pairs", "12", "--cka-n", "40", "--cka-p", "6",
            "--wm-pairs", "4", "--wm-hidden", "8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bench.compare", *args], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {r["bench"]: r for r in (json.loads(line) for line in out.stdout.splitlines() if line.startswith("{"))}
    assert set(rows) == {"one_max_match", "layer_pair", "linear_cka", "weight_matching"}, out.stdout
    a, b = rows["one_max_match"], rows["layer_pair"]
    assert a["same"] and a["rounds_direct"] >= 1 and a["m"] == 80
    assert 0 < a["direct_gflop"] and 0 < a["qr_gflop"]
    assert b["same_curve"] and b["same_simple"] and b["direct_neurons"] == 2 and b["neurons"] == 4
    assert b["extrapolated"] and "EXTRAPOLATED to 4 neurons from 2 timed" in out.stdout
    assert 0 < max(b["curve"]) and (sorted(b["curve"]) == b["curve"])  # a non-trivial, non-decreasing eps-curve
    assert rows["linear_cka"]["same"] and rows["linear_cka"]["pairs"] == 12
    assert rows["weight_matching"]["same"] and rows["weight_matching"]["pairs"] == 4
    assert "1 BLAS thread, 1 torch thread" in out.stdout
    assert all(r["ratio"] > 0 for r in rows.values())


def test_bad_bench_argument_ends_in_one_line():
    out = subprocess.run([sys.executable, "-m", "bench.compare", "--neurons", "8", "--shared", "9"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode != 0 and out.stderr.strip().splitlines()[-1] == "--shared=9 must lie in 1..--neurons=8"
