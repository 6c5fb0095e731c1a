"""CMC, decisions, statistics and seed splits on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightsim.errors import ConfigError
from weightsim.htt import cmc_curve, decide, error_upper_bound, fit_classifier, permutation_p_value, split_seeds


def test_cmc_hand_made():
    # 3 queries, 4 gallery items. Query 0 (label 0): nearest is label 0 -> rank 1.
    # Query 1 (label 1): order g2(0), g0(1) -> rank 2. Query 2 (label 2): no match in the gallery.
    dist = torch.tensor([[0.1, 0.9, 0.5, 0.7],
                         [0.4, 0.8, 0.2, 0.9],
                         [0.3, 0.1, 0.2, 0.4]])
    q = torch.tensor([0, 1, 2])
    g = torch.tensor([1, 0, 0, 1])
    # gallery labels: g0=1, g1=0, g2=0, g3=1; query 0 (label 0) nearest g0 (label 1) at 0.1,
    # then g2 (label 0) at 0.5 -> rank 2. Query 1 (label 1): g2 (0) at .2, g0 (1) at .4 -> rank 2.
    curve = cmc_curve(dist, q, g, max_rank=4)
    np.testing.assert_allclose(curve, [0.0, 2 / 3, 2 / 3, 2 / 3])
    perfect = cmc_curve(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1]), torch.tensor([0, 1]))
    np.testing.assert_allclose(perfect, [1.0, 1.0])


def test_cmc_ties_are_broken_by_gallery_order():
    dist = torch.zeros(1, 3)
    np.testing.assert_allclose(cmc_curve(dist, torch.tensor([5]), torch.tensor([1, 5, 5]), 3), [0, 1, 1])


def test_decide():
    assert decide(0.0, 0.05) == "accept"
    assert decide(0.049, 0.05) == "accept"
    assert decide(0.05, 0.05) == "reject"  # strictly below alpha
    assert decide(0.5, 0.05) == "reject"
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(ConfigError, match="alpha"):
            decide(0.0, bad)


def test_error_upper_bound_is_the_one_sided_clopper_pearson_bound():
    from scipy.stats import binom

    assert error_upper_bound(0, 120, 0.95) == pytest.approx(1 - 0.05 ** (1 / 120), rel=1e-9)
    assert error_upper_bound(0, 120, 0.95) == pytest.approx(0.0247, abs=1e-4)  # 0 errors in 120
    assert error_upper_bound(0, 30, 0.95) == pytest.approx(1 - 0.05 ** (1 / 30), rel=1e-9)  # 0.0950
    assert error_upper_bound(10, 10, 0.95) == 1.0
    for k, n in [(0, 10), (3, 20), (7, 120)]:
        ub = error_upper_bound(k, n, 0.95)
        assert binom.cdf(k, n, ub) == pytest.approx(0.05, abs=1e-9)  # P(<= k errors | p = bound) = 1 - level
        assert ub > k / n and error_upper_bound(k, n, 0.99) > ub  # above the estimate, wider at a higher level
    assert error_upper_bound(3, 20, 0.95) == pytest.approx(0.3437, abs=1e-4)  # below the two-sided 97.5 % end 0.3789
    with pytest.raises(ValueError):
        error_upper_bound(5, 4, 0.95)


def test_permutation_p_value():
    assert permutation_p_value(0.9, [0.1, 0.2, 0.3]) == pytest.approx(0.25)
    assert permutation_p_value(0.2, [0.1, 0.2, 0.3]) == pytest.approx(0.75)  # ties count against
    assert permutation_p_value(0.5, []) is None


def test_split_seeds_fixed_and_errors():
    rows = [{"task": t, "seed": s} for t in (1, 0) for s in (4, 2, 3, 1)]
    train, test = split_seeds(rows, 3)
    assert sorted((rows[i]["task"], rows[i]["seed"]) for i in train) == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    assert sorted((rows[i]["task"], rows[i]["seed"]) for i in test) == [(0, 4), (1, 4)]
    with pytest.raises(ConfigError, match="4 training seeds per task, but task 0 has only 4"):
        split_seeds(rows, 4)


def test_weight_classifier_learns_and_null_heads_do_not():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 30, generator=g) * 3
    y = torch.arange(4).repeat_interleave(20)
    x = centers[y] + torch.randn(80, 30, generator=g)
    model = fit_classifier(x, y, 4, n_null=5, seed=0)
    yt = torch.arange(4).repeat_interleave(10)
    xt = centers[yt] + torch.randn(40, 30, generator=g)
    with torch.no_grad():
        acc = (model(xt).argmax(-1) == yt).float().mean(1)
    assert acc[0] > 0.95
    assert acc[1:].mean() < 0.6  # shuffled-label heads are near chance (0.25) on held-out data
    # standardization is fitted on the training data only
    assert torch.allclose(model.mean, x.mean(0))


def test_span_solution_equals_the_full_space_optimum():
    """The classifier solves the L2 logistic regression in the span of the training nets; the
    optimum found directly over all D features (here D = 300 > N = 36) must be the same."""
    from weightsim.htt.classifier import standardization

    g = torch.Generator().manual_seed(1)
    x = torch.randn(36, 300, generator=g, dtype=torch.float64)
    y = torch.arange(3).repeat(12)
    x[:, :5] += 2.0 * torch.nn.functional.one_hot(y, 5).double()  # some signal
    model = fit_classifier(x, y, 3, l2=1.0, max_iter=1000)
    mean, std = standardization(x)
    z = (x - mean) / std
    w = torch.zeros(300, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=2000, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w + b, y, reduction="sum") + 0.5 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    xt = torch.randn(10, 300, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ours = model(xt)[0]
        full = ((xt - mean) / std) @ w + b
        assert torch.allclose(ours, full, atol=1e-4), (ours - full).abs().max()
        assert torch.allclose(model.basis @ model.weight[0], w, atol=1e-4)  # the projection itself


def test_shared_chains_pairs_chains_by_structure_not_by_feature_size():
    """PlainNet-5 vs PlainNet-6 on 1x8x8 (sketch 128): chain 5 is the FC in one net and a conv in
    the other; both sketch to 8256 features, but their exact row counts differ, so only 1-4 pair."""
    from weightsim.errors import ChainError
    from weightsim.htt.run import shared_chains

    pn5 = [(9, 45), (81, 3321), (729, 8256), (6561, 8256), (26244, 8256)]
    pn6 = [(9, 45), (81, 3321), (729, 8256), (6561, 8256), (59049, 8256), (236196, 8256)]
    assert shared_chains(pn5, pn6, None, cross=True) == [1, 2, 3, 4]
    assert shared_chains(pn5, pn6, [2, 3], cross=True) == [2, 3]
    with pytest.raises(ChainError, match=r"chain\(s\) \[5\] do not exist in both nets.*\[1, 2, 3, 4\]"):
        shared_chains(pn5, pn6, [5], cross=True)
    with pytest.raises(ChainError, match=r"share no chain: the train zoo's chains are \[\(9, 45\)"):
        shared_chains(pn5, [(10, 55)], None, cross=True)
