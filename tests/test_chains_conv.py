"""Conv chains against an independent, straightforward implementation of the paper's reshape rule,
plus the options (bias, bn, scale, sketch) and the errors for unsupported models."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from weightsim.chains import ChainOptions, chain_features, chain_matrices, describe_chains, raw_features
from weightsim.errors import ChainError


def hand_net() -> nn.Sequential:
    """Built here, not by the framework: 1x8x8 -> conv3 -> pool -> conv3+BN -> conv2 (no pad) -> FC."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),          # 8 -> 4
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(),   # 4 -> 4
        nn.Conv2d(4, 2, 2), nn.ReLU(), nn.Dropout(0.1),                      # 4 -> 3
        nn.Flatten(), nn.Linear(2 * 3 * 3, 3)).double().eval()


def loop_chains(kernels: list[np.ndarray]) -> list[np.ndarray]:
    """C_l[(c0, p1, ..., pl), c_l] = sum_{c1..c_{l-1}} K1[c1, c0, p1] K2[c2, c1, p2] ... Kl[cl, c_{l-1}, pl]
    with p_i the kernel taps in row-major order: the paper's R_1 = K_1 as (c0 k k) x c1,
    C_l = reshape(C_{l-1} R_l), written out as explicit sums."""
    flat = [k.reshape(k.shape[0], k.shape[1], -1) for k in kernels]  # (c_out, c_in, taps)
    out = []
    for length in range(1, len(flat) + 1):
        ks = flat[:length]
        taps = [range(k.shape[2]) for k in ks]
        c0, cl = ks[0].shape[1], ks[-1].shape[0]
        rows = []
        for a in range(c0):
            for ps in itertools.product(*taps):
                vec = np.zeros(cl)
                for hidden in itertools.product(*[range(k.shape[0]) for k in ks[:-1]]):
                    chans = (a, *hidden)
                    w = 1.0
                    for i, k in enumerate(ks[:-1]):
                        w *= k[chans[i + 1], chans[i], ps[i]]
                    vec += w * ks[-1][:, chans[-1], ps[-1]]
                rows.append(vec)
        out.append(np.array(rows))
    return out


def test_hand_built_conv_equals_loop_implementation() -> None:
    net = hand_net()
    kernels = [net[0].weight, net[3].weight, net[6].weight, net[10].weight.view(3, 2, 3, 3)]
    expected = loop_chains([k.detach().numpy() for k in kernels])
    got = chain_matrices(net, remedy="exact", bn="ignore")
    assert [tuple(c.shape) for c in got] == [(9, 3), (81, 4), (324, 2), (2916, 3)]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-10, atol=1e-12)
    feats = chain_features(net, remedy="exact", bn="ignore")
    for f, e in zip(feats, expected):
        gram = e @ e.T
        np.testing.assert_allclose(f.numpy(), gram[np.triu_indices(len(gram))], rtol=1e-9, atol=1e-12)


def test_bn_fold_equals_folding_by_hand() -> None:
    """bn=fold: the BN after conv 2 becomes a per-channel scale of conv 3's input channels."""
    net = hand_net()
    with torch.no_grad():
        bn = net[4]
        bn.running_var.copy_(torch.rand(4, dtype=torch.float64) + 0.5)
        bn.weight.copy_(torch.rand(4, dtype=torch.float64) + 0.5)
    d = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    folded = hand_net()
    with torch.no_grad():
        folded[6].weight.mul_(d.view(1, -1, 1, 1))
    a, b = chain_matrices(net, remedy="exact", bn="fold"), chain_matrices(folded, remedy="exact", bn="ignore")
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])  # BN acts after chain 2
    assert torch.allclose(a[2], b[2]) and torch.allclose(a[3], b[3])
    assert not torch.allclose(a[2], chain_matrices(net, remedy="exact", bn="ignore")[2])  # and it did something


def test_bn_invariant_equals_normalizing_by_hand() -> None:
    """bn=invariant (the default): conv 2 reaches its BN directly, so C_2's columns are scaled to norm 1
    (= conv 2's output channels divided by those norms) and BN's gamma scales conv 3's input channels.
    Conv 1 (ReLU, pool, conv 2) and conv 3 (no BN after it) are left as they are."""
    net = hand_net()
    with torch.no_grad():
        net[4].weight.copy_(torch.rand(4, dtype=torch.float64) + 0.5)
    k = [net[0].weight, net[3].weight, net[6].weight, net[10].weight.view(3, 2, 3, 3)]
    k = [t.detach().numpy() for t in k]
    norms = np.linalg.norm(loop_chains(k[:2])[1], axis=0)  # column norms of the BN-ignoring C_2
    gamma = net[4].weight.detach().numpy()
    by_hand = [k[0], k[1] / norms[:, None, None, None], k[2] * gamma[None, :, None, None], k[3]]
    expected = loop_chains(by_hand)
    assert [d["bn_unit_columns"] for d in describe_chains(net)] == [False, True, False, False]
    for g, e in zip(chain_matrices(net, remedy="exact"), expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-10, atol=1e-12)


def test_bias_homogeneous_mlp_matches_definition() -> None:
    """For 1x1 kernels the homogeneous chain is W^_1 W^_2 with W^ = [[W, 0], [b, 1]]."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    hat = [torch.cat([torch.cat([m.weight.T, torch.zeros(m.in_features, 1, dtype=torch.float64)], 1),
                      torch.cat([m.bias, torch.ones(1, dtype=torch.float64)])[None]], 0).detach()
           for m in (net[0], net[2])]
    c = chain_matrices(net, bias=True)
    assert torch.allclose(c[0], hat[0]) and torch.allclose(c[1], hat[0] @ hat[1])


def test_scale_fro_and_sketch_are_fixed_maps() -> None:
    net = hand_net()
    f = chain_features(net, remedy="exact", scale="fro")
    for x in f:  # ||G||_F = 1: diagonal counted once, off-diagonal twice
        n = int((np.sqrt(8 * x.numel() + 1) - 1) / 2)
        g = torch.zeros(n, n, dtype=x.dtype)
        i, j = torch.triu_indices(n, n)
        g[i, j] = x
        g = g + g.T - torch.diag(torch.diag(g))
        assert abs(float(torch.linalg.norm(g)) - 1.0) < 1e-9
    s1, s2 = chain_features(net, remedy="sketch", sketch_dim=8), chain_features(net, remedy="sketch", sketch_dim=8)
    assert all(torch.equal(a, b) for a, b in zip(s1, s2))  # the same seeded S every call
    s3 = chain_features(net, remedy="sketch", sketch_dim=8, sketch_seed=1)
    assert all(not torch.allclose(a, b) for a, b in zip(s1, s3))
    assert [x.numel() for x in s1] == [36] * 4


def test_auto_remedy_follows_budget() -> None:
    net = hand_net()  # exact rows 9, 81, 324, 2916
    plan = describe_chains(net, ChainOptions(budget_mb=324 * 324 * 4 / 2 ** 20))
    assert [p["remedy"] for p in plan] == ["exact", "exact", "exact", "sketch"]
    assert [p["rows_exact"] for p in plan] == [9, 81, 324, 2916]
    assert [p["remedy"] for p in describe_chains(net, remedy="exact")] == ["exact"] * 4
    assert all(p["remedy"] == "sketch" and p["sketch_dim"] == 128 for p in describe_chains(net, remedy="sketch"))


def test_raw_features_are_the_layers() -> None:
    net = hand_net()
    raw = raw_features(net)
    assert [r.numel() for r in raw] == [27, 108, 32, 54]
    assert torch.equal(raw[1], net[3].weight.detach().flatten())


@pytest.mark.parametrize("model, name", [
    (nn.Sequential(nn.Linear(4, 3), nn.LSTM(3, 2)), "'1' (LSTM)"),
    (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2)), "'0' (Conv2d with groups=2)"),
    (nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2)), "'1' takes 5 units"),
    (nn.Sequential(nn.ReLU()), "no Linear, Conv2d or GRU"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6, 2)), "'2' (Linear with 24 inputs)"),
])
def test_unsupported_models_name_the_module(model: nn.Module, name: str) -> None:
    with pytest.raises(ChainError, match=name.replace("(", r"\(").replace(")", r"\)")):
        chain_features(model)


def test_options_are_validated() -> None:
    from weightsim.errors import ConfigError
    with pytest.raises(ConfigError, match="remedy"):
        ChainOptions(remedy="maybe")
    with pytest.raises(ConfigError, match="scale"):
        ChainOptions(scale="l2")
