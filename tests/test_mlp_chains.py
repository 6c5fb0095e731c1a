"""Chain normalization for MLPs: chain Grams are invariant to every function-preserving hidden
permutation (verified on outputs), and they do move when the function really changes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weightsim.chains import chain_features, chain_matrices, raw_features, zoo_chain_features, zoo_raw_features
from weightsim.errors import ChainError
from weightsim.nets.mlp import MLP


def make_mlp(seed: int, activation: str = "relu", bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    net = MLP((12,), 3, hidden=[10, 9, 8], depth=4, activation=activation, bias=bias)
    for p in net.parameters():  # non-zero biases, so a wrong bias permutation would show
        nn.init.normal_(p, std=0.5)
    return net.double()


def linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net if isinstance(m, nn.Linear)]


def permute_hidden(net: nn.Sequential, seed: int) -> nn.Sequential:
    """Permute the units of every hidden layer: W_l -> W_l P, W_{l+1} -> P^T W_{l+1} (paper orientation)."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(net)
    lin = linears(out)
    with torch.no_grad():
        for a, b in zip(lin[:-1], lin[1:]):
            p = torch.randperm(a.out_features, generator=g)
            a.weight.copy_(a.weight[p]); a.bias.copy_(a.bias[p])
            b.weight.copy_(b.weight[:, p])
    return out


def rescale_hidden(net: nn.Sequential, seed: int, layers: list[int]) -> nn.Sequential:
    """Positive per-unit rescaling of the ReLU units of hidden layers ``layers`` (1-based):
    W_k -> W_k D, W_{k+1} -> D^-1 W_{k+1}."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(net)
    lin = linears(out)
    with torch.no_grad():
        for k in layers:
            a, b = lin[k - 1], lin[k]
            d = torch.rand(a.out_features, generator=g, dtype=torch.float64) * 3 + 0.2
            a.weight.mul_(d[:, None]); a.bias.mul_(d)
            b.weight.div_(d[None])
    return out


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    return bool((a - b).norm() <= rtol * b.norm())


def assert_same_function(f: nn.Module, g: nn.Module) -> None:
    x = torch.randn(64, 12, dtype=torch.float64)
    assert torch.allclose(f(x), g(x), atol=1e-9), "the transformation must preserve the function"


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
@pytest.mark.parametrize("bias", [False, True])
def test_chain_features_invariant_to_hidden_permutation(activation, bias):
    net = make_mlp(0, activation)
    perm = permute_hidden(net, 1)
    assert_same_function(net, perm)
    fa, fb = chain_features(net, bias=bias), chain_features(perm, bias=bias)
    assert len(fa) == 4
    for a, b in zip(fa, fb):
        assert close(a, b)
    # the permutation really moved the hidden weights (so the test is not vacuous)
    assert not torch.allclose(linears(net)[1].weight, linears(perm)[1].weight)
    assert not all(torch.allclose(a, b) for a, b in zip(raw_features(net), raw_features(perm)))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_relu_rescaling_inside_a_chain_leaves_it_unchanged(k):
    """Rescaling layer k's units is absorbed inside chains l > k (C_l = ..W_k D D^-1 W_{k+1}..);
    chain k itself sees C_k D, so G_k changes. Chains >= 2 are invariant to rescaling layer 1,
    and chain L to every rescaling."""
    net = make_mlp(0, "relu")
    scaled = rescale_hidden(net, 2, [k])
    assert_same_function(net, scaled)
    fa, fb = chain_features(net), chain_features(scaled)
    assert not close(fa[k - 1], fb[k - 1], 1e-3)
    for a, b in zip(fa[k:], fb[k:]):
        assert close(a, b)
    every = rescale_hidden(net, 3, [1, 2, 3])
    assert_same_function(net, every)
    assert close(chain_features(every)[-1], fa[-1])


def test_features_move_for_another_net_and_input_permutation():
    net, other = make_mlp(0), make_mlp(5)
    fa, fo = chain_features(net), chain_features(other)
    for a, b in zip(fa, fo):
        assert not close(a, b, 1e-2)
    shuffled = copy.deepcopy(net)
    with torch.no_grad():
        first = linears(shuffled)[0]
        first.weight.copy_(first.weight[:, torch.randperm(12, generator=torch.Generator().manual_seed(3))])
    for a, b in zip(fa, chain_features(shuffled)):
        assert not close(a, b, 1e-2)


def test_chain_matrices_orientation_and_last_chain_is_the_product():
    net = make_mlp(0)
    w = [m.weight.detach() for m in linears(net)]
    cs = chain_matrices(net)
    assert [tuple(c.shape) for c in cs] == [(12, 10), (12, 9), (12, 8), (12, 3)]
    assert torch.allclose(cs[0], w[0].T)
    assert torch.allclose(cs[3], w[0].T @ w[1].T @ w[2].T @ w[3].T)  # C_L = W_1 ... W_L
    g = cs[1] @ cs[1].T
    i, j = torch.triu_indices(12, 12)
    assert torch.allclose(chain_features(net)[1], g[i, j])
    # homogeneous coordinates: the bias of layer 1 is the last row of C_1
    hb = chain_matrices(net, bias=True)[0]
    assert torch.allclose(hb[-1, :-1], linears(net)[0].bias.detach()) and hb.shape == (13, 11)


@pytest.mark.parametrize("bias", [False, True])
def test_sketched_walk_equals_the_explicit_product(bias):
    """The walk applies S_1 to W_1 directly (no C_0 = I): every sketched chain equals the explicit
    (S_l ... S_1)(W^_1 ... W^_l) built here in float64 from the weights and the plan's sketches."""
    from weightsim.chains import ChainOptions, chain_layers, plan_chains
    from weightsim.chains.core import sketch_matrices

    torch.manual_seed(0)
    net = MLP((3, 16, 16), 5, hidden=[40, 30, 20], depth=4)  # d_1 = 768 (769): over the 1 MiB budget, sketched
    opts = ChainOptions(bias=bias)
    plan = plan_chains(chain_layers(net), opts)
    assert plan.remedy == ("sketch",) * 4
    sketches = sketch_matrices(plan, opts, dtype=torch.float64)
    factors = []
    for m in linears(net):
        w = m.weight.detach().double().T  # paper orientation n_{l-1} x n_l
        if bias:  # W^_l = [[W_l, 0], [b_l, 1]]
            w = torch.cat([torch.cat([w, torch.zeros(len(w), 1, dtype=w.dtype)], 1),
                           torch.cat([m.bias.detach().double(), torch.ones(1, dtype=w.dtype)])[None]])
        factors.append(w)
    s_all, prod = torch.eye(len(factors[0]), dtype=torch.float64), torch.eye(len(factors[0]), dtype=torch.float64)
    got = chain_matrices(net, opts)  # float32 walk
    for l, (s, w) in enumerate(zip(sketches, factors)):
        s_all, prod = s @ s_all, prod @ w  # S_l ... S_1 and W^_1 ... W^_l
        want = s_all @ prod
        # float32 against float64 products of <= 4 factors over <= 769 terms: relative error ~1e-6
        torch.testing.assert_close(got[l].double(), want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
        i, j = torch.triu_indices(len(want), len(want))
        torch.testing.assert_close(chain_features(net, opts)[l].double(), (want @ want.T)[i, j], rtol=1e-4,
                                   atol=1e-5 * float((want @ want.T).abs().max()))


def test_zoo_path_equals_per_net_results():
    nets = [make_mlp(s) for s in range(7)]
    stacked = {k: torch.stack([dict(n.named_parameters())[k].detach() for n in nets])
               for k, _ in nets[0].named_parameters()}
    for bias in (False, True):
        zoo = zoo_chain_features(nets[0], stacked, bias=bias, batch_size=3)  # batches of 3: 3 + 3 + 1
        for i, n in enumerate(nets):
            for l, f in enumerate(chain_features(n, bias=bias)):
                assert torch.allclose(zoo[l][i], f, rtol=1e-10, atol=1e-12)
    for l, f in enumerate(zoo_raw_features(nets[0], stacked)):
        assert torch.equal(f[4], raw_features(nets[4])[l])


def test_unsupported_module_is_named():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.raises(ChainError, match="'1' \\(LayerNorm\\)"):
        chain_features(net)

    class Squared(nn.Module):  # a forward the chain walk cannot know: refused, not guessed
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.b(self.a(x) ** 2)

    with pytest.raises(ChainError, match="'<root>' \\(Squared\\)"):
        chain_features(Squared())
    lone = nn.Linear(3, 3)  # a bare Linear is a one-layer net: one chain, G_1 = W_1 W_1^T
    g = lone.weight.detach().T @ lone.weight.detach()
    assert torch.allclose(chain_features(lone)[0], g[tuple(torch.triu_indices(3, 3))])
