"""Neuron activation subspace match: planted cases with known answers, and the fast path against
a direct per-round least-squares implementation of the same pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from bench.compare import max_match_direct, minimal_match_direct  # the reference's pruning, written for the bench
from weightsim.compare import match_curve, max_epsilon, max_match, min_epsilon, minimal_match, simple_matches
from weightsim.errors import ConfigError, DataError, WeightsimWarning


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The matrices here are small: one BLAS thread is fastest and does not stall when other
    processes share the cores."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def is_match(a, b, ix, iy, eps) -> bool:
    """(ix, iy) is an eps-match, checked on the raw activations."""
    def ok(x, y):
        if x.shape[1] == 0:
            return True
        if y.shape[1] == 0:
            return False
        c = np.linalg.lstsq(y, x, rcond=None)[0]
        return bool((np.linalg.norm(y @ c - x, axis=0) <= eps * np.linalg.norm(x, axis=0)).all())
    return ok(a[:, ix], b[:, iy]) and ok(b[:, iy], a[:, ix])


def shared_subspace(noise: float = 0.0, d: int = 500, k: int = 5, n_shared: int = 8, n_generic: int = 24,
                    seed: int = 0):
    """Two nets whose first n_shared neurons lie in one common k-dim subspace (plus relative noise
    of size ``noise``), followed by n_generic random neurons each."""
    g = np.random.default_rng(seed)
    u = np.linalg.qr(g.standard_normal((d, k)))[0]

    def net():
        s = u @ g.standard_normal((k, n_shared))
        e = g.standard_normal((d, n_shared))
        s = s + noise * e * np.linalg.norm(s, axis=0) / np.linalg.norm(e, axis=0)  # ||e_v|| = noise ||s_v||
        return np.concatenate([s, g.standard_normal((d, n_generic))], axis=1)

    return net(), net()


def test_s1_shared_subspace_gives_the_planted_neurons_and_a_quarter():
    a, b = shared_subspace()
    m = max_match(a, b, 0.1)
    assert m.ix.tolist() == list(range(8)) and m.iy.tolist() == list(range(8))
    assert np.linalg.matrix_rank(np.concatenate([a[:, m.ix], b[:, m.iy]], axis=1), tol=1e-8) == 5
    assert m.similarity == 16 / 64 and m.eps == 0.1 and m.rounds >= 1
    grid = (0.05, 0.1, 0.3, 0.5, 0.7, 0.9)
    np.testing.assert_array_equal(match_curve(a, b, grid), np.full(len(grid), 0.25))
    # past sqrt(1 - 32/500) = 0.967 every generic neuron lies within eps of the other net's span,
    # and the size warning says so
    with pytest.warns(WeightsimWarning, match="live neurons against d=500"):
        assert max_match(a, b, 0.99).similarity == 1.0


def test_s2_noisy_shared_neurons_match_only_above_the_noise():
    # with noise 0.2 the residual of a shared neuron onto the other net's shared span is above 0.2;
    # where the match switches on depends on the draw (0.3 to 0.55 over seeds 0..11); this draw
    # switches on between 0.35 and 0.45
    a, b = shared_subspace(noise=0.2, seed=10)
    grid = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.8)
    curve = match_curve(a, b, grid)
    assert (curve[:4] == 0).all() and (curve[5:] == 0.25).all(), curve
    assert (np.diff(curve) >= 0).all()  # an eps-match is an eps'-match for every eps' > eps
    # the curve from one factorization equals one max match per eps
    np.testing.assert_array_equal(curve, [max_match(a, b, e).similarity for e in grid])
    assert max_match(a, b, 0.5).ix.tolist() == list(range(8))
    # the least eps with all 8 shared neurons matched lies between the two plateaus
    e8 = min_epsilon(a, b, 8, tol=1e-4)
    assert 0.35 < e8 < 0.45
    assert len(max_match(a, b, e8).ix) >= 8 and len(max_match(a, b, e8).iy) >= 8
    assert min(len(max_match(a, b, e8 - 2e-4).ix), len(max_match(a, b, e8 - 2e-4).iy)) < 8


def planted_simple(d: int = 60, seed: int = 1):
    """A0 = B3 / 2; span(A1, A2) = span(B1, B2) with no neuron of one parallel to one of the other;
    A3, A4, B0, B4 generic."""
    g = np.random.default_rng(seed)
    a, b = g.standard_normal((d, 5)), g.standard_normal((d, 5))
    b[:, 3] = 2 * a[:, 0]
    b[:, 1], b[:, 2] = a[:, 1] + a[:, 2], a[:, 1] - 0.5 * a[:, 2]
    return a, b


def test_s3_simple_matches_come_out_as_planted():
    a, b = planted_simple()
    m = max_match(a, b, 0.05)
    assert m.ix.tolist() == [0, 1, 2] and m.iy.tolist() == [1, 2, 3]
    pairs = lambda m: (m.ix.tolist(), m.iy.tolist())  # noqa: E731
    assert pairs(minimal_match(a, b, "a", 0, 0.05)) == ([0], [3])
    assert pairs(minimal_match(a, b, "b", 3, 0.05)) == ([0], [3])
    for side, v in (("a", 1), ("a", 2), ("b", 1), ("b", 2)):
        assert pairs(minimal_match(a, b, side, v, 0.05)) == ([1, 2], [1, 2])
        assert pairs(minimal_match(a, b, side, v, 0.05, order="random", rng=3)) == ([1, 2], [1, 2])
    assert minimal_match(a, b, "a", 4, 0.05) is None and minimal_match(a, b, "b", 0, 0.05) is None
    found = simple_matches(a, b, 0.05)
    assert [pairs(m) for m in found] == [([0], [3]), ([1, 2], [1, 2])]
    assert all(m.similarity == (len(m.ix) + len(m.iy)) / 10 for m in found)
    assert [pairs(m) for m in simple_matches(a, b, 0.05, neurons=[("b", 2), ("a", 4)])] == [([1, 2], [1, 2])]


def test_simple_matches_are_valid_and_minimal_on_a_random_case():
    # noisy shared structure of several sizes: matches of varied shape
    g = np.random.default_rng(7)
    u = g.standard_normal((200, 6))
    a = u @ g.standard_normal((6, 12)) + 0.05 * g.standard_normal((200, 12))
    b = u @ g.standard_normal((6, 10)) + 0.05 * g.standard_normal((200, 10))
    eps = 0.3
    mm = max_match(a, b, eps)
    assert len(mm.ix) and len(mm.iy)
    found = simple_matches(a, b, eps)
    assert found and len({(tuple(m.ix), tuple(m.iy)) for m in found}) == len(found)
    for m in found:
        assert is_match(a, b, m.ix, m.iy, eps)
        assert set(m.ix) <= set(mm.ix) and set(m.iy) <= set(mm.iy)
    for side, v in [("a", int(i)) for i in mm.ix[:3]] + [("b", int(i)) for i in mm.iy[:3]]:
        m = minimal_match(a, b, side, v, eps, order="random", rng=0)
        assert v in (m.ix if side == "a" else m.iy) and is_match(a, b, m.ix, m.iy, eps)
        # minimal: dropping any other neuron leaves no match that still holds v
        for s, u_ in [("a", i) for i in m.ix] + [("b", j) for j in m.iy]:
            if (s, u_) == (side, v):
                continue
            ix = [i for i in m.ix if (s, i) != ("a", u_)]
            iy = [j for j in m.iy if (s, j) != ("b", u_)]
            sub = max_match(a[:, ix], b[:, iy], eps)
            kept = np.asarray(ix)[sub.ix] if side == "a" else np.asarray(iy)[sub.iy]
            assert v not in kept


def test_s4_permuted_and_rescaled_copy_matches_fully():
    g = np.random.default_rng(2)
    a = np.maximum(g.standard_normal((500, 32)), 0)  # post-ReLU-like activations
    perm = g.permutation(32)
    assert max_match(a, a[:, perm], 1e-6).similarity == 1.0
    b = a[:, perm] * g.uniform(0.1, 10, 32)  # per-neuron positive rescale
    m = max_match(a, b, 1e-6)
    assert m.similarity == 1.0 and m.ix.tolist() == m.iy.tolist() == list(range(32))
    assert max_match(a, g.standard_normal((500, 32)), 0.5).similarity == 0.0  # non-vacuity


def test_s5_independent_random_neurons_do_not_match():
    g = np.random.default_rng(5)
    a, b = g.standard_normal((2000, 256)), g.standard_normal((2000, 256))
    m = max_match(a, b, 0.5)
    assert m.similarity == 0.0 and m.ix.size == 0 and m.iy.size == 0


def test_dead_neurons_count_in_the_denominator():
    g = np.random.default_rng(3)
    a = g.standard_normal((300, 16))
    b = a[:, ::-1].copy()
    a[:, [2, 5, 9]] = 0.0
    b[:, [0, 1]] = 0.0  # a's neurons 15, 14 now have no partner
    m = max_match(a, b, 1e-6)
    assert m.ix.tolist() == [i for i in range(14) if i not in (2, 5, 9)]
    assert m.iy.tolist() == [j for j in range(2, 16) if 15 - j not in (2, 5, 9)]
    assert m.similarity == (11 + 11) / 32
    assert max_match(a, np.zeros((300, 4)), 0.5).similarity == 0.0  # a dead net matches nothing
    # every eps at or above the largest residual of a live neuron matches all live ones
    c = np.concatenate([a, g.standard_normal((300, 3))], axis=1)
    e = max_epsilon(c, b)
    with pytest.warns(WeightsimWarning, match="random activations already match"):  # e is about 0.99
        assert max_match(c, b, e).similarity == (16 + 14) / (19 + 16)
        assert max_match(c, b, e - 1e-6).similarity < (16 + 14) / (19 + 16)


def noisy_case(seed: int, d: int = 400, ma: int = 30, mb: int = 26):
    """Shared 8-dim structure with per-neuron noise levels spread over [0, 0.8]: the pruning
    takes several rounds and stops at matches of every size."""
    g = np.random.default_rng(seed)
    u = g.standard_normal((d, 8))

    def net(m):
        s = u @ g.standard_normal((8, m))
        e = g.standard_normal((d, m))
        return s + g.uniform(0, 0.8, m) * e * np.linalg.norm(s, axis=0) / np.linalg.norm(e, axis=0)

    return net(ma), net(mb)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_equals_direct_least_squares(seed):
    a, b = noisy_case(seed)
    a[:, 3] = 0.0  # a dead neuron on the way
    sizes, rounds = set(), set()
    grid = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    direct = [max_match_direct(a, b, eps) for eps in grid]
    np.testing.assert_array_equal(match_curve(a, b, grid), [(len(ix) + len(iy)) / 56 for ix, iy, _, _ in direct])
    for eps in grid:
        ix, iy, r, _ = max_match_direct(a, b, eps)
        m = max_match(a, b, eps)
        assert m.ix.tolist() == ix.tolist() and m.iy.tolist() == iy.tolist() and m.rounds == r, eps
        g = max_match(a, b, eps, method="gram")
        assert g.ix.tolist() == ix.tolist() and g.iy.tolist() == iy.tolist(), eps
        sizes.add(len(ix))
        rounds.add(r)
    assert len(sizes) >= 3 and max(rounds) >= 2  # non-vacuity: varied matches, multi-round pruning


def test_minimal_match_equals_the_direct_version():
    # shrinking to the maximum match after each accepted deletion takes the same decisions as the
    # reference's unshrunk candidate set: MM(S minus u) = MM(MM(S) minus u)
    a, b = noisy_case(5)
    eps = 0.5
    m = max_match(a, b, eps)
    assert len(m.ix) >= 4 and len(m.iy) >= 4
    for side, v in [("a", int(i)) for i in m.ix[:3]] + [("b", int(j)) for j in m.iy[:3]] + [("a", 0), ("b", 1)]:
        fast, direct = minimal_match(a, b, side, v, eps), minimal_match_direct(a, b, side, v, eps)
        assert (fast is None) == (direct is None)
        if fast is not None:
            assert fast.ix.tolist() == direct[0].tolist() and fast.iy.tolist() == direct[1].tolist()
            assert len(fast.ix) + len(fast.iy) < len(m.ix) + len(m.iy)  # non-vacuity: it did shrink


def test_fast_path_equals_direct_least_squares_on_rank_deficient_spans():
    # the planted cases have exactly rank-deficient spans (8 neurons in 5 dims, B1, B2 in
    # span(A1, A2)): the rank cutoff must agree with the direct solve's
    s1, s3 = shared_subspace(), planted_simple()
    s4 = np.maximum(np.random.default_rng(2).standard_normal((500, 32)), 0)
    for (a, b), eps in [(s1, 0.05), (s1, 0.5), (s3, 0.05), (s3, 1e-9), ((s4, s4[:, ::-1] * 3), 1e-6)]:
        ix, iy, r, _ = max_match_direct(a, b, eps)
        m = max_match(a, b, eps)
        assert (m.ix.tolist(), m.iy.tolist(), m.rounds) == (ix.tolist(), iy.tolist(), r), eps
        assert len(ix) > 0


def test_redundant_neurons_do_not_widen_the_span():
    # 40 neurons of net B in a 5-dim span: the 35 directions rounding leaves in them must count as
    # zero, or they would soak up the off-span part of A0 (relative distance 0.5 from the span)
    g = np.random.default_rng(11)
    u = np.linalg.qr(g.standard_normal((100, 6)))[0]
    b = u[:, :5] @ g.standard_normal((5, 40))
    c = g.standard_normal(5)
    x = np.sqrt(0.75) * u[:, :5] @ c / np.linalg.norm(c) + 0.5 * u[:, 5]  # residual 0.5 exactly
    a = np.concatenate([x[:, None], u[:, :5] @ g.standard_normal((5, 5))], axis=1)
    for method in ("qr", "gram"):
        m = max_match(a, b, 0.3, method=method)
        assert m.ix.tolist() == [1, 2, 3, 4, 5] and m.iy.tolist() == list(range(40)), method
        assert max_match(a, b, 0.51, method=method).ix.tolist() == list(range(6))
    assert max_match_direct(a, b, 0.3)[0].tolist() == [1, 2, 3, 4, 5]
    assert max_epsilon(a, b) == pytest.approx(0.5, abs=1e-6)


def test_torch_and_numpy_inputs_agree():
    a, b = noisy_case(4)
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    a32, b32 = ta.double().numpy(), tb.double().numpy()  # the same float32 values
    for eps in (0.2, 0.4):
        m, t = max_match(a32, b32, eps), max_match(ta, tb, eps)
        assert (m.ix.tolist(), m.iy.tolist(), m.rounds) == (t.ix.tolist(), t.iy.tolist(), t.rounds)
    np.testing.assert_array_equal(match_curve(ta, tb), match_curve(a32, b32))
    assert max_epsilon(ta, tb) == pytest.approx(max_epsilon(a32, b32), abs=1e-10)
    assert [(m.ix.tolist(), m.iy.tolist()) for m in simple_matches(ta, tb, 0.4, [("a", 0), ("b", 1)])] == \
        [(m.ix.tolist(), m.iy.tolist()) for m in simple_matches(a32, b32, 0.4, [("a", 0), ("b", 1)])]


def test_bad_input_gets_one_clear_error():
    a, b = np.ones((10, 3)), np.ones((12, 3))
    with pytest.raises(DataError, match="10 and 12 inputs"):
        max_match(a, b, 0.1)
    with pytest.raises(DataError, match="10 and 12 inputs"):
        max_match(a, b, 0.1, method="gram")
    with pytest.raises(DataError, match="10 and 12 inputs"):
        max_match(torch.ones(10, 3), torch.ones(12, 3), 0.1)
    with pytest.raises(DataError, match="2-D"):
        max_match(np.ones(10), a, 0.1)
    with pytest.raises(DataError, match="2-D"):
        max_match(torch.ones(10), torch.ones(10, 3), 0.1)
    with pytest.raises(DataError, match="NaN"):
        max_match(np.full((10, 3), np.nan), a, 0.1)
    with pytest.raises(ConfigError, match="eps=-0.1"):
        max_match(a, a, -0.1)
    with pytest.raises(ConfigError, match="method='svd'"):
        max_match(a, a, 0.1, method="svd")
    with pytest.raises(ConfigError, match="side='c'"):
        minimal_match(a, a, "c", 0, 0.1)
    with pytest.raises(ConfigError, match="neuron 3 of net b does not exist"):
        simple_matches(a, a, 0.1, neurons=[("b", 3)])
    with pytest.raises(ConfigError, match="min_size=4"):
        min_epsilon(a, a, 4)
