"""Memory: chain features of one plainnet5 on 3x32x32 inputs, all chains, under 200 MB peak with
the default budget (measured in a subprocess; the measurement itself must see a bigger job)."""

from __future__ import annotations

import sys

import pytest

from bench.chains import memory_peak

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


def test_plainnet5_32x32_default_budget_under_200mb() -> None:
    r = memory_peak((3, 32, 32))
    assert r["chains"] == 5
    assert r["peak_increase_mb"] < 200, r
    big = memory_peak((3, 32, 32), budget_mb=64.0)  # chain 3 exact: a 2187 x 2187 Gram (18 MiB) and more
    assert big["feature_dims"][2] == 2187 * 2188 // 2
    assert big["peak_increase_mb"] > r["peak_increase_mb"] + 15, (r, big)  # the probe sees memory


def test_featurization_bench_runs_and_agrees_with_the_loop():
    """`make bench` must keep working: a 3-net run of it, batched path equal to the per-net loop."""
    from bench.chains import bench

    out = bench(nets=3, input_shape=(1, 8, 8))
    assert out["batched_equals_loop"] is True and out["nets"] == 3 and len(out["feature_dims"]) == 5
