"""Hidden permutations and ReLU rescalings under every chain option, for every architecture, on the
harness of tests/test_symmetries.py (which tests the default features against every symmetry).

Random weights (and random BN statistics), a random *function-preserving* hidden permutation
(tied across residual shortcuts, signed for the GRU) whose function preservation this
test checks on random inputs, then every chain feature must agree to 1e-5 relative. With and
without bias, with every bn mode (invariant, ignore, fold), exact and sketched. ReLU / leaky-ReLU nets without BN:
positive per-unit rescaling of a layer leaves every chain but that layer's own unchanged.
Non-vacuity: another net, or a permutation of the input coordinates, changes every chain.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.test_symmetries import ARCHS, apply_groups, assert_same_function, hidden_groups, make, rel
from weightsim.chains import ChainOptions, chain_features, zoo_chain_features
from weightsim.nets import MLP, GRUNet, PlainNet, ResNet, ResNetMLP

TOL = 1e-5

NO_BN = {
    "mlp4": ARCHS["mlp4"],
    "mlp4_leaky": lambda: MLP((3, 4, 4), 3, hidden=[12, 10, 8], depth=4, activation="leaky_relu"),
    "plainnet5": lambda: PlainNet((3, 8, 8), 3, units=4, channels=4, norm="none"),
    "plainnet5_leaky": lambda: PlainNet((3, 8, 8), 3, units=4, channels=4, norm="none", activation="leaky_relu"),
    "resnet5": lambda: ResNet((3, 8, 8), 3, units=4, channels=4, norm="none"),
    "resnet_mlp": lambda: ResNetMLP((3, 4, 4), 3, width=8, blocks=3, norm="none"),  # 3 blocks: faster
}
OPTIONS = [dict(bias=b, bn=f, remedy=r, budget_mb=4.0, sketch_dim=16)
           for b in (False, True) for f in ("invariant", "ignore", "fold") for r in ("auto", "sketch")] + \
    [dict(scale="unit"), dict(scale="unit", bn="fold", remedy="sketch", sketch_dim=16)]


def permuted(net: nn.Module, seed: int) -> nn.Module:
    """Every hidden layer permuted (tied along residual streams; GRU: signed permutations)."""
    return apply_groups(net, hidden_groups(net), seed, perm=True, sign=isinstance(net, GRUNet), scale=False)


# -- the tests -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(ARCHS))
def test_permutation_invariance(arch: str) -> None:
    net = make(arch)
    perm_net = permuted(net, seed=1)
    assert_same_function(net, perm_net)  # also checks that the parameters moved
    for kw in OPTIONS:
        fa, fb = chain_features(net, **kw), chain_features(perm_net, **kw)
        worst = max(rel(a, b) for a, b in zip(fa, fb))
        assert worst < TOL, f"{arch} {kw}: chain features moved by {worst:.2e}"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_non_vacuity(arch: str) -> None:
    """Another net, or the same net on permuted input coordinates, changes every chain."""
    net, other = make(arch, 0), make(arch, 5)
    swapped = copy.deepcopy(net)
    with torch.no_grad():
        first = swapped.rnn.weight_ih_l0 if isinstance(net, GRUNet) else next(
            p for n, p in swapped.named_parameters() if n.endswith("weight") and p.dim() >= 2)
        c_in = first.shape[1]
        perm = torch.roll(torch.arange(c_in), 1)  # a permutation of the input coordinates
        first.copy_(first[:, perm])
    for kw in (dict(), dict(bias=True, bn="fold"), dict(bn="ignore"), dict(remedy="sketch", sketch_dim=16)):
        f, fo, fs = chain_features(net, **kw), chain_features(other, **kw), chain_features(swapped, **kw)
        assert min(rel(a, b) for a, b in zip(f, fo)) > 1e-2, f"{arch} {kw}: another net, same features"
        assert min(rel(a, b) for a, b in zip(f, fs)) > 1e-6, f"{arch} {kw}: input permutation not seen"


@pytest.mark.parametrize("arch", list(NO_BN))
def test_rescaling_invariance(arch: str) -> None:
    """Rescaling one group's units by positive D: only the chains that end at those units change
    (so chains >= 2 are invariant to rescaling the first hidden layer, and so on)."""
    net = make(NO_BN[arch], 0)
    groups = hidden_groups(net)
    order = [n for n, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for gi, group in enumerate(groups):
        scaled = apply_groups(net, [group], 10 + gi, perm=False, sign=False, scale=True)
        assert_same_function(net, scaled)
        touched = {name.rsplit(".", 1)[0] for name, mode in group if mode == "out"}  # layers whose rows scale
        ends = {order.index(m) for m in touched}  # 0-based chain indices ending at scaled units
        for kw in (dict(), dict(bias=True), dict(remedy="sketch", sketch_dim=16)):
            fa, fb = chain_features(net, **kw), chain_features(scaled, **kw)
            for c, (a, b) in enumerate(zip(fa, fb)):
                if c in ends:
                    assert rel(a, b) > 1e-3, f"{arch} chain {c + 1}: rescaling not seen (vacuous)"
                else:
                    assert rel(a, b) < TOL, f"{arch} chain {c + 1} {kw}: moved {rel(a, b):.2e} under rescaling"


def test_exact_everywhere_small_conv() -> None:
    """All chains exact (forced) on a conv net small enough for exact Grams; also scale=fro."""
    build = lambda: PlainNet((1, 8, 8), 2, units=2, channels=3, norm="none")  # noqa: E731
    net = make(build, 0)
    perm_net = permuted(net, seed=2)
    assert_same_function(net, perm_net)
    for kw in (dict(remedy="exact"), dict(remedy="exact", bias=True, scale="fro")):
        fa, fb = chain_features(net, **kw), chain_features(perm_net, **kw)
        d = [9, 81, 324] if not kw.get("bias") else [18, 162, 648]  # (c0 [+1]) k^2 ..., FC as a 2 x 2 kernel
        assert [f.numel() for f in fa] == [n * (n + 1) // 2 for n in d]
        assert max(rel(a, b) for a, b in zip(fa, fb)) < TOL


@pytest.mark.parametrize("arch", list(ARCHS))
def test_zoo_batched_equals_single(arch: str) -> None:
    """The batched (vmap) zoo path gives each net's own chain_features."""
    nets = [make(arch, s) for s in range(3)]
    stacked = {k: torch.stack([dict(n.named_parameters()).get(k, dict(n.named_buffers()).get(k)) for n in nets])
               for k in list(dict(nets[0].named_parameters())) + list(dict(nets[0].named_buffers()))}
    for kw in (dict(batch_size=2), dict(bias=True, remedy="sketch", sketch_dim=16, scale="fro", batch_size=2),
               dict(bias=True, bn="fold", remedy="sketch", sketch_dim=16, scale="fro", batch_size=2)):
        zoo = zoo_chain_features(nets[0], stacked, ChainOptions(**kw))
        for i, n in enumerate(nets):
            for c, f in enumerate(chain_features(n, **kw)):
                assert rel(f, zoo[c][i]) < 1e-10


def test_unit_scale_removes_the_last_layers_rescaling() -> None:
    """scale=unit: rescaling the units of layer j leaves chain j unchanged too (without bias)."""
    net = make(NO_BN["plainnet5"], 0)
    scaled = apply_groups(net, [hidden_groups(net)[1]], 3, perm=False, sign=False, scale=True)
    assert_same_function(net, scaled)
    fa, fb = chain_features(net, scale="unit"), chain_features(scaled, scale="unit")
    assert max(rel(a, b) for a, b in zip(fa, fb)) < TOL
    plain = chain_features(net), chain_features(scaled)
    assert rel(plain[0][1], plain[1][1]) > 1e-3  # without it chain 2 moves (non-vacuity)
