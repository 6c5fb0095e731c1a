"""Benchmarks of weightsim.compare against the direct ways: subspace match, linear CKA, weight matching.

    python -m bench.compare                       # full size: d = 10 000 inputs, 256 + 256 neurons
    python -m bench.compare --d 500 --neurons 32  # small

Each comparison runs both ways side by side in one process, checks they give the same result and
prints one ratio line plus one JSON line:

(a) one maximum subspace match at one eps: ``max_match`` (one thin QR of [A | B], then every
    pruning round on min(d, m) coordinates) against the 2018 reference's pruning written out here
    (every round a least-squares solve of each remaining neuron of one net onto the remaining
    neurons of the other on the full d x k system), with the FLOP counts that bound the ratio;
(b) the work per layer pair: the eps-curve over the paper's grid plus the simple matches of 16
    neurons of the maximum match, ``match_curve`` + ``simple_matches`` against one direct maximum
    match per eps and the reference's greedy deletion per neuron (the direct simple matches are
    timed on --direct-neurons neurons and extrapolated per neuron);
(c) linear CKA of many net pairs: ``linear_cka_batched`` against a loop of ``linear_cka``;
(d) weight matching of many net pairs: ``aligned_distances`` against a loop of ``weight_matching``.

Activations are synthetic (seeded): two nets whose first neurons lie in one common 32-dim
subspace, each with its own noise level, the rest random, so the matches are non-trivial. All
timings use one BLAS and one torch thread (the machine may be shared). Run from the repository
root (bench/ is not part of the installed package).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from weightsim.compare import (GRID, aligned_distances, linear_cka, linear_cka_batched, match_curve, max_match,
                               simple_matches, weight_matching)
from weightsim.nets.mlp import MLP


# -- the direct implementations (the 2018 reference's per-round least squares) ---------------------
def lstsq_flops(d: int, k: int, rhs: int) -> float:
    """FLOPs of one least-squares solve on a d x k system with `rhs` right-hand sides and its
    residual: factor 2 d k^2, apply to the right-hand sides 2 d k rhs, residual y c 2 d k rhs."""
    return 2.0 * d * k * k + 4.0 * d * k * rhs


def max_match_direct(a: np.ndarray, b: np.ndarray, eps: float, zero_tol: float = 1e-16):
    """Maximum eps-match by the reference's pruning: each round, keep the neurons of A whose
    relative residual onto span(remaining B) is <= eps (numpy lstsq on the full d x k system), then
    the same for B onto the remaining A; zero columns dropped first; stop when a round removes
    nothing. Returns (ix, iy, rounds, flops)."""
    d = a.shape[0]
    flops = 0.0

    def rel_residuals(x, y):  # ||y c - x|| / ||x|| with c = lstsq(y, x)
        nonlocal flops
        flops += lstsq_flops(d, y.shape[1], x.shape[1])
        c = np.linalg.lstsq(y, x, rcond=None)[0]
        return np.linalg.norm(y @ c - x, axis=0) / np.linalg.norm(x, axis=0)

    ia = np.flatnonzero(np.linalg.norm(a, axis=0) > zero_tol)
    ib = np.flatnonzero(np.linalg.norm(b, axis=0) > zero_tol)
    rounds = 0
    while len(ia) and len(ib):
        rounds += 1
        keep_a = rel_residuals(a[:, ia], b[:, ib]) <= eps
        ia = ia[keep_a]
        if not len(ia):
            break
        keep_b = rel_residuals(b[:, ib], a[:, ia]) <= eps
        ib = ib[keep_b]
        if keep_a.all() and keep_b.all():
            break
    if not (len(ia) and len(ib)):
        ia, ib = ia[:0], ib[:0]
    return ia, ib, rounds, flops


def minimal_match_direct(a: np.ndarray, b: np.ndarray, side: str, v: int, eps: float):
    """The reference's v-minimal match: from the maximum match, try deleting each other neuron (net A
    first, index order), keep the deletion when v stays in the maximum match of the rest; then one
    maximum match of what is left. (ix, iy), or None when v is not in the maximum match."""
    ix, iy, _, _ = max_match_direct(a, b, eps)
    s = 0 if side == "a" else 1
    if v not in (ix, iy)[s]:
        return None
    cur = [ix, iy]
    for t, u in [(0, int(i)) for i in ix] + [(1, int(j)) for j in iy]:
        if (t, u) == (s, v):
            continue
        trial = list(cur)
        trial[t] = trial[t][trial[t] != u]
        tx, ty, _, _ = max_match_direct(a[:, trial[0]], b[:, trial[1]], eps)
        if v in (trial[0][tx], trial[1][ty])[s]:
            cur = trial
    tx, ty, _, _ = max_match_direct(a[:, cur[0]], b[:, cur[1]], eps)
    return cur[0][tx], cur[1][ty]


# -- test data --------------------------------------------------------------------------------------
def shared_activations(d: int, m: int, n_shared: int, k: int = 32, max_noise: float = 0.2,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two (d, m) activation matrices: the first n_shared neurons of each lie in one common k-dim
    subspace plus noise of relative size spread evenly over [0, max_noise] (so the small eps of the
    grid keep only part of them); the other m - n_shared neurons are random directions."""
    g = np.random.default_rng(seed)
    u = np.linalg.qr(g.standard_normal((d, k)))[0]

    def net() -> np.ndarray:
        s = u @ g.standard_normal((k, n_shared))
        e = g.standard_normal((d, n_shared))
        noise = g.permutation(np.linspace(0.0, max_noise, n_shared))
        s = s + noise * e * np.linalg.norm(s, axis=0) / np.linalg.norm(e, axis=0)  # ||e_v|| = noise_v ||s_v||
        return np.concatenate([s, g.standard_normal((d, m - n_shared))], axis=1)

    return net(), net()


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def same(p, q) -> bool:
    return np.array_equal(np.asarray(p), np.asarray(q))


# -- (a) one maximum match --------------------------------------------------------------------------
def bench_one_match(a: np.ndarray, b: np.ndarray, eps: float) -> dict:
    d, m = a.shape[0], a.shape[1] + b.shape[1]
    fast, t_fast = timed(lambda: max_match(a, b, eps))
    (ix, iy, rounds, flops), t_direct = timed(lambda: max_match_direct(a, b, eps))
    ok = same(fast.ix, ix) and same(fast.iy, iy)
    qr = 2.0 * d * m * m  # thin QR of [A | B]: the fast path's floor
    print(f"(a) one max match, eps={eps:g}, d={d}, {a.shape[1]} + {b.shape[1]} neurons: direct {t_direct:.2f} s, "
          f"max_match {t_fast:.2f} s, ratio {t_direct / t_fast:.1f}x; same match: {ok} "
          f"(|X*|={len(ix)}, |Y*|={len(iy)}); rounds: direct {rounds}, max_match {fast.rounds}")
    print(f"    FLOPs: QR of [A|B] 2 d m^2 = {qr / 1e9:.1f} GFLOP (the fast path cannot avoid it) vs direct "
          f"{rounds} rounds of lstsq on d x k = {flops / 1e9:.1f} GFLOP: bound {flops / qr:.1f}x; a single match "
          f"of few rounds cannot gain much, since one direct round costs about as much as the one QR")
    row = {"bench": "one_max_match", "eps": eps, "d": d, "m": m, "direct_s": t_direct, "fast_s": t_fast,
           "ratio": t_direct / t_fast, "same": ok, "rounds_direct": rounds, "rounds_fast": fast.rounds,
           "qr_gflop": qr / 1e9, "direct_gflop": flops / 1e9, "flop_bound": flops / qr}
    print(json.dumps(row), flush=True)
    return row


# -- (b) the eps-curve plus simple matches ----------------------------------------------------------
def bench_layer_pair(a: np.ndarray, b: np.ndarray, eps: float, n_simple: int, direct_neurons: int) -> dict:
    m0 = max_match(a, b, eps)
    picks = [("a", int(v)) for v in m0.ix][: (n_simple + 1) // 2] + [("b", int(v)) for v in m0.iy][: n_simple // 2]
    neurons = [p for pair in zip(picks[: (n_simple + 1) // 2], picks[(n_simple + 1) // 2:]) for p in pair]
    neurons += [p for p in picks if p not in neurons]  # interleaved a, b, a, b, ...; the rest if one side is short

    def fast():
        return match_curve(a, b, GRID), simple_matches(a, b, eps, neurons=neurons)

    (curve, simple), t_fast = timed(fast)
    curve_direct, t_curve = timed(lambda: [max_match_direct(a, b, e) for e in GRID])
    checked = neurons[:direct_neurons]
    simple_direct, t_simple = timed(lambda: [minimal_match_direct(a, b, s, v, eps) for s, v in checked])
    per_neuron = t_simple / max(len(checked), 1)
    t_direct = t_curve + per_neuron * len(neurons)

    # same results: the curve's similarities, each eps's (ix, iy), and the simple matches checked
    n_all = a.shape[1] + b.shape[1]
    ok_curve = same(curve, [(len(ix) + len(iy)) / n_all for ix, iy, _, _ in curve_direct])
    ok_curve &= all(same(f.ix, ix) and same(f.iy, iy)
                    for e, (ix, iy, _, _) in zip(GRID, curve_direct) for f in [max_match(a, b, e)])
    ok_simple = True
    for (s, v), direct in zip(checked, simple_direct):
        (f,) = simple_matches(a, b, eps, neurons=[(s, v)])
        ok_simple &= direct is not None and same(f.ix, direct[0]) and same(f.iy, direct[1])
        ok_simple &= any(same(g.ix, f.ix) and same(g.iy, f.iy) for g in simple)
    ratio = t_direct / t_fast
    print(f"(b) eps-curve over {GRID} + simple matches of {len(neurons)} neurons at eps={eps:g}: direct {t_direct:.1f} s "
          f"(curve {t_curve:.1f} s measured + simple matches {per_neuron:.1f} s per neuron, EXTRAPOLATED to "
          f"{len(neurons)} neurons from {len(checked)} timed), fast {t_fast:.2f} s, ratio {ratio:.1f}x (target >= 10x); "
          f"same matches: curve {ok_curve}, simple {ok_simple} (on the {len(checked)} timed neurons); "
          f"{len(simple)} distinct simple matches, sizes {sorted(len(g.ix) + len(g.iy) for g in simple)}")
    print(f"    curve: {np.round(curve, 4).tolist()}")
    row = {"bench": "layer_pair", "eps": eps, "grid": list(GRID), "curve": curve.tolist(), "neurons": len(neurons),
           "direct_neurons": len(checked), "direct_s": t_direct, "direct_curve_s": t_curve,
           "direct_s_per_neuron": per_neuron, "fast_s": t_fast, "ratio": ratio, "same_curve": bool(ok_curve),
           "same_simple": bool(ok_simple), "extrapolated": len(checked) < len(neurons)}
    print(json.dumps(row), flush=True)
    return row


# -- (c) linear CKA ---------------------------------------------------------------------------------
def bench_cka(pairs: int, n: int, p: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(pairs, n, p, generator=g, dtype=torch.float64)
    ys = xs @ torch.randn(pairs, p, p, generator=g, dtype=torch.float64) + torch.randn(pairs, n, p, generator=g,
                                                                                        dtype=torch.float64)
    batched, t_fast = timed(lambda: linear_cka_batched(xs, ys))
    loop, t_loop = timed(lambda: np.array([linear_cka(x, y) for x, y in zip(xs, ys)]))
    ok = bool(np.allclose(batched, loop, rtol=1e-10, atol=1e-12))
    print(f"(c) linear CKA of {pairs} pairs (n={n} inputs, p={p} neurons): loop {t_loop:.2f} s, batched {t_fast:.2f} s, "
          f"ratio {t_loop / t_fast:.1f}x; same values: {ok} (max |diff| {np.abs(batched - loop).max():.1e}); "
          f"both do the same 3 x 2 n p^2 = {6 * n * p * p * pairs / 1e9:.2f} GFLOP on one thread, so batching "
          f"saves only the per-call overhead here")
    row = {"bench": "linear_cka", "pairs": pairs, "n": n, "p": p, "loop_s": t_loop, "batched_s": t_fast,
           "ratio": t_loop / t_fast, "same": ok}
    print(json.dumps(row), flush=True)
    return row


# -- (d) weight matching ----------------------------------------------------------------------------
def bench_weight_matching(pairs: int, hidden: int, depth: int, seed: int = 0) -> dict:
    rows = math.ceil(math.sqrt(pairs))
    cols = math.ceil(pairs / rows)  # rows x cols >= pairs distinct (i, j) pairs of distinct nets
    torch.manual_seed(seed)
    nets = [MLP((hidden,), 10, hidden=hidden, depth=depth).eval() for _ in range(rows + cols)]
    left, right = nets[:rows], nets[rows:]
    batched, t_fast = timed(lambda: aligned_distances(left, right))
    loop, t_loop = timed(lambda: np.array([[weight_matching(x, y).distance for y in right] for x in left]))
    ok = bool(np.allclose(batched, loop, rtol=1e-12, atol=0))
    arch = "-".join([str(hidden)] * depth + ["10"])
    print(f"(d) weight matching of {rows * cols} pairs ({rows} x {cols} MLPs {arch}): loop {t_loop:.2f} s, "
          f"aligned_distances {t_fast:.2f} s, ratio {t_loop / t_fast:.2f}x; same distances: {ok}; "
          f"aligned_distances is itself a loop of weight_matching over the pairs, so about 1x is expected "
          f"(no batched weight matching yet)")
    row = {"bench": "weight_matching", "pairs": rows * cols, "arch": arch, "loop_s": t_loop,
           "aligned_distances_s": t_fast, "ratio": t_loop / t_fast, "same": ok, "batched": False}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=10_000, help="inputs (rows of the activations)")
    ap.add_argument("--neurons", type=int, default=256, help="neurons per net")
    ap.add_argument("--shared", type=int, default=64, help="neurons per net in the common subspace")
    ap.add_argument("--k", type=int, default=32, help="dimension of the common subspace")
    ap.add_argument("--max-noise", type=float, default=0.2, help="largest relative noise of a shared neuron")
    ap.add_argument("--eps", type=float, default=0.3, help="eps of (a) and of the simple matches of (b)")
    ap.add_argument("--simple", type=int, default=16, help="neurons whose simple matches (b) computes")
    ap.add_argument("--direct-neurons", type=int, default=2,
                    help="neurons the direct simple matches are timed on (extrapolated to --simple)")
    ap.add_argument("--cka-pairs", type=int, default=1000)
    ap.add_argument("--cka-n", type=int, default=500)
    ap.add_argument("--cka-p", type=int, default=32)
    ap.add_argument("--wm-pairs", type=int, default=1000, help="net pairs of (d)")
    ap.add_argument("--wm-hidden", type=int, default=64, help="MLP width and input size of (d)")
    ap.add_argument("--wm-depth", type=int, default=3, help="MLP hidden layers of (d)")
    ap.add_argument("--only", default="abcd", help="which comparisons to run, e.g. 'ab'")
    a = ap.parse_args(argv)
    if not 0 < a.shared <= a.neurons:
        raise SystemExit(f"--shared={a.shared} must lie in 1..--neurons={a.neurons}")
    torch.set_num_threads(1)
    rows = []
    with threadpool_limits(limits=1, user_api="blas"):
        print(f"weightsim compare bench: numpy {np.__version__}, torch {torch.__version__}, 1 BLAS thread, "
              f"{torch.get_num_threads()} torch thread (both ways)", flush=True)
        if "a" in a.only or "b" in a.only:
            x, y = shared_activations(a.d, a.neurons, a.shared, a.k, a.max_noise)
            if "a" in a.only:
                rows.append(bench_one_match(x, y, a.eps))
            if "b" in a.only:
                rows.append(bench_layer_pair(x, y, a.eps, a.simple, a.direct_neurons))
        if "c" in a.only:
            rows.append(bench_cka(a.cka_pairs, a.cka_n, a.cka_p))
        if "d" in a.only:
            rows.append(bench_weight_matching(a.wm_pairs, a.wm_hidden, a.wm_depth))
    return rows


if __name__ == "__main__":
    main()
