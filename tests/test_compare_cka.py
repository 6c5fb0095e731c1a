"""CKA: reference values on the demo data, invariances (and the per-neuron rescaling blind spot),
the debiased statistic against its U-statistic definition, the layer matrix, minibatch and batched
forms against the single-pair function, and bad input."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from weightsim.compare import MinibatchCKA, cka_matrix, kernel_cka, linear_cka, linear_cka_batched
from weightsim.errors import ConfigError, DataError, WeightsimWarning


@pytest.fixture
def demo():
    """The reference notebook's demo data: Y shares X's signal plus as much independent noise."""
    rng = np.random.RandomState(1337)
    x = rng.randn(100, 10)
    return x, rng.randn(100, 10) + x


def test_demo_values_match_the_reference(demo):
    x, y = demo
    assert round(linear_cka(x, y), 5) == 0.55761
    assert round(linear_cka(x, y, debiased=True), 5) == 0.51346
    assert round(kernel_cka(x, y, kernel="rbf", frac=0.5), 5) == 0.65483


@pytest.mark.parametrize("n", [33, 40])
def test_rbf_bandwidth_is_frac_times_the_median_distance(n):
    """Against numpy written out: sigma^2 = frac^2 * np.median of all n x n squared distances."""
    rng = np.random.RandomState(n)
    x, y = rng.randn(n, 4), rng.randn(n, 6)

    def centred_rbf(a, frac):
        d2 = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        k = np.exp(-d2 / (2 * frac**2 * np.median(d2)))
        h = np.eye(n) - 1.0 / n
        return h @ k @ h

    for frac in (0.5, 2.0):
        k, l = centred_rbf(x, frac), centred_rbf(y, frac)
        expected = (k * l).sum() / np.sqrt((k * k).sum() * (l * l).sum())
        assert kernel_cka(x, y, frac=frac) == pytest.approx(expected, abs=1e-12)
    assert abs(kernel_cka(x, y, frac=0.5) - kernel_cka(x, y, frac=2.0)) > 1e-3  # frac matters


def test_torch_input_gives_the_numpy_value(demo):
    x, y = demo
    assert linear_cka(torch.tensor(x, dtype=torch.float32), torch.tensor(y)) == pytest.approx(
        linear_cka(x.astype(np.float32), y), abs=1e-12)
    assert kernel_cka(torch.tensor(x), y, debiased=True) == pytest.approx(kernel_cka(x, y, debiased=True), abs=1e-12)


def _transformed_copies(x: np.ndarray, rng: np.random.RandomState) -> dict[str, np.ndarray]:
    """Neuron permutation, orthogonal rotation, isotropic scale + shift of x, each checked to be
    what it claims and to differ from x."""
    p = x.shape[1]
    perm = rng.permutation(p)
    q, _ = np.linalg.qr(rng.randn(p, p))
    assert np.allclose(q.T @ q, np.eye(p), atol=1e-12)
    copies = {"permuted": x[:, perm], "rotated": x @ q, "scaled+shifted": 3.7 * x + rng.randn(1, p) * 5.0}
    assert np.array_equal(np.sort(copies["permuted"], axis=1), np.sort(x, axis=1))
    for c in copies.values():
        assert not np.allclose(c, x)
    return copies


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_copies_give_one_and_noise_does_not(demo, debiased):
    x, y = demo
    for name, c in _transformed_copies(x, np.random.RandomState(0)).items():
        assert linear_cka(x, c, debiased=debiased) == pytest.approx(1.0, abs=1e-10), name
        assert kernel_cka(x, c, debiased=debiased) == pytest.approx(1.0, abs=1e-10), name
    # non-vacuity: a real change of the representation moves the value well below 1
    assert linear_cka(x, y, debiased=debiased) < 0.6
    assert kernel_cka(x, y, debiased=debiased) < 0.7


def test_per_neuron_rescaling_is_not_an_invariance():
    """Rescaling single hidden units of a ReLU net (incoming weights times c > 0, outgoing divided by c)
    keeps the function but lowers CKA of that layer: the documented blind spot."""
    torch.manual_seed(0)
    w1, b1, w2 = (torch.randn(*shape, dtype=torch.float64) for shape in [(40, 30), (40,), (3, 40)])
    c = torch.exp(torch.randn(40, dtype=torch.float64))
    x = torch.randn(500, 30, dtype=torch.float64)
    h = torch.relu(x @ w1.T + b1)
    h_scaled = torch.relu(x @ (c[:, None] * w1).T + c * b1)
    assert torch.allclose(h @ w2.T, h_scaled @ (w2 / c).T, atol=1e-10)  # same function
    perm = torch.randperm(40)
    h_perm = torch.relu(x @ w1[perm].T + b1[perm])
    assert torch.allclose(h @ w2.T, h_perm @ w2[:, perm].T, atol=1e-10)  # same function
    assert linear_cka(h, h_perm) == pytest.approx(1.0, abs=1e-10)
    value = linear_cka(h, h_scaled)
    assert 0.0 < value < 0.95  # 0.40 here: the subspace is the same, the metric on it is not


def test_independent_gaussians_sit_near_p_over_n_biased_and_zero_debiased():
    p = 10
    for n in (100, 1000):
        biased, debiased = [], []
        for seed in range(20):
            rng = np.random.RandomState(seed)
            a, b = rng.randn(n, p), rng.randn(n, p)
            biased.append(linear_cka(a, b))
            debiased.append(linear_cka(a, b, debiased=True))
        assert abs(np.mean(biased) - p / n) < 0.2 * p / n, n  # spread of the mean of 20: ~0.03 p/n
        assert abs(np.mean(debiased)) < 0.1 * p / n, n
        assert min(debiased) < 0  # the unbiased statistic does go negative


def test_biased_values_lie_in_the_unit_interval():
    rng = np.random.RandomState(3)
    for n, p1, p2 in [(50, 5, 7), (20, 40, 3), (30, 30, 30), (8, 100, 100), (200, 2, 1)]:
        x = rng.randn(n, p1)
        x[:, 0] = 0.0  # a dead neuron
        y = np.maximum(rng.randn(n, p2) + x[:, :1] * rng.rand(), 0)
        for a, b in [(x, y), (x, x), (x, np.round(x))]:
            for v in (linear_cka(a, b), kernel_cka(a, b), linear_cka(a, b, form="gram")):
                assert 0.0 <= v <= 1.0 + 1e-12


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_and_gram_forms_agree(debiased):
    rng = np.random.RandomState(5)
    for n, p1, p2 in [(60, 5, 9), (12, 30, 4), (10, 40, 50)]:
        x, y = rng.randn(n, p1), rng.randn(n, p2) + rng.randn(n, 1)
        feature = linear_cka(x, y, debiased=debiased, form="feature")
        gram = linear_cka(x, y, debiased=debiased, form="gram")
        assert feature == pytest.approx(gram, abs=1e-12)
        assert kernel_cka(x, y, kernel="linear", debiased=debiased) == pytest.approx(feature, abs=1e-12)
        assert linear_cka(x, y, debiased=debiased) == pytest.approx(feature, abs=1e-12)


def test_debiased_hsic_is_the_u_statistic_of_its_definition():
    """Against the U-statistic written out over all ordered 4-tuples of distinct inputs (Song et al.
    2012): HSIC_u = mean over (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    rng = np.random.RandomState(7)
    n = 7
    x, y = rng.randn(n, 3), rng.randn(n, 2) + rng.randn(n, 1)

    def hsic_u(k, l):
        terms = [k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
                 for i, j, q, r in itertools.permutations(range(n), 4)]
        return np.mean(terms)

    k, l = x @ x.T, y @ y.T  # uncentred: the U-statistic does not need centring
    expected = hsic_u(k, l) / np.sqrt(hsic_u(k, k) * hsic_u(l, l))
    assert linear_cka(x, y, debiased=True) == pytest.approx(expected, abs=1e-12)
    assert linear_cka(x, y, debiased=True, form="gram") == pytest.approx(expected, abs=1e-12)


def _layers(rng, n):
    """Three layers of one net (one wider than n) and two of another, sharing some signal."""
    z = rng.randn(n, 4)
    a = [z @ rng.randn(4, 6) + 0.3 * rng.randn(n, 6), np.maximum(z @ rng.randn(4, n + 5), 0), rng.randn(n, 3)]
    b = [np.tanh(z @ rng.randn(4, 8)), z[:, :2] + rng.randn(n, 2)]
    return a, b


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_equals_pairwise_linear_cka(debiased):
    a, b = _layers(np.random.RandomState(11), 40)
    m = cka_matrix(a, b, debiased=debiased)
    assert m.shape == (3, 2)
    expected = np.array([[linear_cka(x, y, debiased=debiased) for y in b] for x in a])
    np.testing.assert_allclose(m, expected, atol=1e-12)
    assert np.ptp(m) > 0.3  # the layers really differ


def test_minibatch_over_all_subsets_equals_the_full_debiased_value():
    """HSIC_u is a U-statistic of order 4, so its mean over every size-k subset of the n inputs is
    exactly the full-data HSIC_u: MinibatchCKA fed all C(8, 5) = 56 subsets returns the full
    debiased CKA matrix."""
    a, b = _layers(np.random.RandomState(13), 8)
    mb = MinibatchCKA(3, 2)
    for idx in itertools.combinations(range(8), 5):
        mb.update([t[list(idx)] for t in a], [t[list(idx)] for t in b])
    assert mb.batches == 56
    np.testing.assert_allclose(mb.compute(), cka_matrix(a, b, debiased=True), atol=1e-10)
    one = MinibatchCKA(3, 2).update(a, b)  # one batch holding everything: the debiased value itself
    np.testing.assert_allclose(one.compute(), cka_matrix(a, b, debiased=True), atol=1e-12)


def test_minibatch_over_a_partition_approaches_the_full_value():
    """Disjoint batches of 25 covering 2 000 inputs: the average unbiased HSIC estimates the same
    population quantity, so minibatch CKA lands within 0.02 of the full debiased CKA, while the
    biased CKA of single batches is far off (the batch size bias p/k the unbiased HSIC removes)."""
    rng = np.random.RandomState(17)
    n, k = 2000, 25
    x = rng.randn(n, 10)
    acts_a, acts_b = [x, rng.randn(n, 10)], [rng.randn(n, 10) + x]
    full = cka_matrix(acts_a, acts_b, debiased=True)
    mb = MinibatchCKA(2, 1)
    biased_per_batch = []
    for rows in np.split(rng.permutation(n), n // k):
        mb.update([t[rows] for t in acts_a], [t[rows] for t in acts_b])
        biased_per_batch.append(cka_matrix([t[rows] for t in acts_a], [t[rows] for t in acts_b]))
    np.testing.assert_allclose(mb.compute(), full, atol=0.02)
    assert np.abs(np.mean(biased_per_batch, axis=0) - full).max() > 0.1


@pytest.mark.parametrize("debiased", [False, True])
def test_batched_equals_the_per_pair_loop(debiased):
    rng = np.random.RandomState(19)
    for n, p1, p2 in [(50, 6, 9), (10, 30, 12)]:  # feature form, Gram form
        xs = rng.randn(5, n, p1)
        ys = np.concatenate([xs[:, :, :1], rng.randn(5, n, p2 - 1)], axis=2) * rng.rand(5, 1, 1)
        batched = linear_cka_batched(xs, ys, debiased=debiased)
        loop = np.array([linear_cka(x, y, debiased=debiased) for x, y in zip(xs, ys)])
        assert batched.shape == (5,)
        np.testing.assert_allclose(batched, loop, atol=1e-12)
        np.testing.assert_allclose(linear_cka_batched(torch.tensor(xs), torch.tensor(ys), debiased=debiased), loop,
                                   atol=1e-12)


def test_constant_layer_gives_nan_with_a_warning():
    rng = np.random.RandomState(23)
    x, dead = rng.randn(30, 4), np.zeros((30, 5))
    with pytest.warns(WeightsimWarning, match="does not vary over the inputs"):
        assert np.isnan(linear_cka(x, dead))
    with pytest.warns(WeightsimWarning, match="1 CKA value"):
        m = cka_matrix([x, dead + 2.0], [x])
    assert m[0, 0] == pytest.approx(1.0) and np.isnan(m[1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear_cka(x, x[:, ::-1])  # no warning for a defined value


def test_bad_input_gets_one_clear_error():
    rng = np.random.RandomState(29)
    x = rng.randn(20, 3)
    with pytest.raises(DataError,
                       match="x has 20 inputs .* but y has 19; both representations must come from the same in"):
        linear_cka(x, x[:19])
    with pytest.raises(DataError, match=r"x has shape \(20,\); CKA needs a 2-D array \(n_inputs, n_neurons\)"):
        linear_cka(x[:, 0], x)
    with pytest.raises(DataError, match="y contains NaN or inf"):
        linear_cka(x, np.where(x > 1, np.nan, x))
    with pytest.raises(DataError, match="debiased CKA needs at least 4"):
        linear_cka(x[:3], x[:3], debiased=True)
    with pytest.raises(ConfigError, match="kernel='cosine' is not known; use 'rbf' or 'linear'"):
        kernel_cka(x, x, kernel="cosine")
    with pytest.raises(ConfigError, match="frac=0 must be > 0"):
        kernel_cka(x, x, frac=0)
    with pytest.raises(DataError, match="median squared distance between inputs is 0"):
        kernel_cka(np.zeros((20, 3)) + (np.arange(20) > 15)[:, None], x)
    with pytest.raises(ConfigError, match="form='fast' is not known"):
        linear_cka(x, x, form="fast")
    with pytest.raises(DataError, match="xs holds 2 pairs but ys 3"):
        linear_cka_batched(rng.randn(2, 20, 3), rng.randn(3, 20, 3))
    with pytest.raises(DataError, match="acts_b\\[1\\] has shape"):
        cka_matrix([x], [x, x[None]])
    with pytest.raises(DataError, match=r"cka_matrix: acts_a\[0\] has 20 inputs \(rows\) but acts_b\[0\] has 10"):
        cka_matrix([x], [x[:10]])
    mb = MinibatchCKA(1, 2)
    with pytest.raises(DataError, match="compute called before any update"):
        mb.compute()
    with pytest.raises(DataError, match="got 1 and 1 layers, but was built for 1 and 2"):
        mb.update([x], [x])
