"""Hidden permutations and ReLU rescalings under every chain option, for every architecture
(the default features against every symmetry: tests/test_symmetries.py).

Random weights (and random BN statistics), a random *function-preserving* hidden permutation
(tied across residual shortcuts, gate-consistent for the GRU) whose function preservation this
test checks on random inputs, then every chain feature must agree to 1e-5 relative. With and
without bias, with every bn mode (invariant, ignore, fold), exact and sketched. ReLU / leaky-ReLU nets without BN:
positive per-unit rescaling of a layer leaves every chain but that layer's own unchanged.
Non-vacuity: another net, or a permutation of the input coordinates, changes every chain.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from weightsim.chains import ChainOptions, chain_features, zoo_chain_features
from weightsim.nets import MLP, GRUNet, PlainNet, ResNet, ResNetMLP

TOL = 1e-5

# name -> builder of a small random net (double precision, random BN statistics)
ARCHS = {
    "mlp4": lambda: MLP((3, 4, 4), 3, hidden=[12, 10, 8], depth=4),
    "plainnet5": lambda: PlainNet((3, 8, 8), 3, units=4, channels=4),
    "plainnet6": lambda: PlainNet((3, 8, 8), 3, units=5, channels=[4, 5, 4, 3, 4]),
    "plainnet5_leaky": lambda: PlainNet((3, 8, 8), 3, units=4, channels=4, activation="leaky_relu"),
    "resnet5": lambda: ResNet((3, 8, 8), 3, units=4, channels=4),
    "resnet_mlp12": lambda: ResNetMLP((3, 4, 4), 3, width=8, blocks=6),
    "gru2": lambda: GRUNet((6,), 3, hidden=5, layers=2, vocab_size=8),
}
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


def make(builder, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = builder().double().eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias") or p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.5)
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn_like(m.running_mean))
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
    return net


def inputs(net: nn.Module, n: int = 16) -> torch.Tensor:
    shape = net.input_shape
    if isinstance(net, GRUNet):
        codes = torch.randint(1, net.onehot.vocab + 3, (n, *shape))  # some codes above vocab
        codes[: n // 2, -2:] = 0  # trailing padding for half of the batch
        return codes
    return torch.randn(n, *shape, dtype=torch.float64)


# -- hidden symmetries, written from the architecture (independent of the chain code) ---------------
# an entry: (parameter name, how the group's transform acts on it)
#   "out": dim 0 (unit outputs: weight rows, bias, BN vectors); "in": dim 1 of a weight;
#   "gate_out": dim 0 in each of the 3 gate blocks; ("in_spatial", s): dim 1 of a Linear weight
#   viewed as (out, c, s*s)
def _weights_and_bns(net: nn.Module) -> list[tuple[str, nn.Module, list[str]]]:
    seq = []
    for name, m in net.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            seq.append((name, m, []))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            seq[-1][2].append(name)
    return seq


def _layer_group(seq, i: int) -> list:
    name, m, bns = seq[i]
    entries = [(f"{name}.weight", "out")] + ([(f"{name}.bias", "out")] if m.bias is not None else [])
    for bn in bns:
        entries += [(f"{bn}.{k}", "out") for k in ("weight", "bias", "running_mean", "running_var")]
    nxt_name, nxt, _ = seq[i + 1]
    if isinstance(nxt, nn.Linear) and isinstance(m, nn.Conv2d):
        entries.append((f"{nxt_name}.weight", ("in_spatial", math.isqrt(nxt.in_features // m.out_channels))))
    else:
        entries.append((f"{nxt_name}.weight", "in"))
    return entries


def hidden_groups(net: nn.Module) -> list[list]:
    """Groups of parameters that one hidden permutation (or rescaling) must act on together."""
    if isinstance(net, GRUNet):
        groups = []
        for layer in range(net.rnn.num_layers):
            p = f"rnn.{{}}_l{layer}"
            g = [(p.format("weight_ih"), "gate_out"), (p.format("bias_ih"), "gate_out"),
                 (p.format("weight_hh"), "gate_out"), (p.format("bias_hh"), "gate_out"),
                 (p.format("weight_hh"), "in")]
            g.append((f"rnn.weight_ih_l{layer + 1}", "in") if layer + 1 < net.rnn.num_layers else ("fc.weight", "in"))
            groups.append(g)
        return groups
    seq = _weights_and_bns(net)
    groups = [_layer_group(seq, i) for i in range(len(seq) - 1)]
    if isinstance(net, ResNet):  # every unit output lives in the residual stream: one tied permutation
        return [sum(groups, [])]
    if isinstance(net, ResNetMLP):  # stream: stem and every block's second layer; inner: first layers
        stream = groups[0] + sum(groups[2::2], [])
        return [stream] + groups[1::2]
    return groups


def transform(net: nn.Module, groups: list[list], kind: str, seed: int) -> tuple[nn.Module, list[set]]:
    """A copy of ``net`` with a random permutation ("perm") or positive rescaling ("scale") per group.
    Also returns, per group, the weight modules whose *outputs* it acts on."""
    g = torch.Generator().manual_seed(seed)
    out = _copy(net)
    params = dict(out.named_parameters()) | dict(out.named_buffers())
    touched = []
    with torch.no_grad():
        for group in groups:
            name0, mode0 = group[0]
            n = params[name0].shape[0] // (3 if mode0 == "gate_out" else 1)
            perm = torch.randperm(n, generator=g)
            d = torch.rand(n, generator=g, dtype=torch.float64) * 1.5 + 0.5
            touched.append({nm.rsplit(".", 1)[0] for nm, md in group if md == "out"})
            for name, mode in group:
                t = params[name]
                if mode == "out":
                    new = t[perm] if kind == "perm" else t * d.view(-1, *[1] * (t.dim() - 1))
                elif mode == "gate_out":
                    v = t.view(3, n, *t.shape[1:])
                    new = (v[:, perm] if kind == "perm" else v * d.view(1, -1, *[1] * (t.dim() - 1))).reshape(t.shape)
                elif mode == "in":
                    new = t[:, perm] if kind == "perm" else t / d.view(1, -1, *[1] * (t.dim() - 2))
                else:  # ("in_spatial", s)
                    v = t.view(t.shape[0], n, -1)
                    new = (v[:, perm] if kind == "perm" else v / d.view(1, -1, 1)).reshape(t.shape)
                t.copy_(new)
    return out, touched


def _copy(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / a.norm().clamp_min(1e-300))


def assert_same_function(a: nn.Module, b: nn.Module) -> None:
    x = inputs(a)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert torch.allclose(ya, yb, rtol=1e-9, atol=1e-9), "the transformation changed the function"


# -- the tests -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(ARCHS))
def test_permutation_invariance(arch: str) -> None:
    net = make(ARCHS[arch], 0)
    perm_net, _ = transform(net, hidden_groups(net), "perm", seed=1)
    assert_same_function(net, perm_net)
    assert any(rel(p1.flatten(), p2.flatten()) > 1e-3
               for p1, p2 in zip(net.parameters(), perm_net.parameters())), "the permutation did nothing"
    for kw in OPTIONS:
        fa, fb = chain_features(net, **kw), chain_features(perm_net, **kw)
        worst = max(rel(a, b) for a, b in zip(fa, fb))
        assert worst < TOL, f"{arch} {kw}: chain features moved by {worst:.2e}"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_non_vacuity(arch: str) -> None:
    """Another net, or the same net on permuted input coordinates, changes every chain."""
    net, other = make(ARCHS[arch], 0), make(ARCHS[arch], 5)
    swapped = _copy(net)
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
        scaled, touched = transform(net, [group], "scale", seed=10 + gi)
        assert_same_function(net, scaled)
        ends = {order.index(m) for m in touched[0]}  # 0-based chain indices ending at scaled units
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
    perm_net, _ = transform(net, hidden_groups(net), "perm", seed=2)
    assert_same_function(net, perm_net)
    for kw in (dict(remedy="exact"), dict(remedy="exact", bias=True, scale="fro")):
        fa, fb = chain_features(net, **kw), chain_features(perm_net, **kw)
        d = [9, 81, 324] if not kw.get("bias") else [18, 162, 648]  # (c0 [+1]) k^2 ..., FC as a 2 x 2 kernel
        assert [f.numel() for f in fa] == [n * (n + 1) // 2 for n in d]
        assert max(rel(a, b) for a, b in zip(fa, fb)) < TOL


@pytest.mark.parametrize("arch", list(ARCHS))
def test_zoo_batched_equals_single(arch: str) -> None:
    """The batched (vmap) zoo path gives each net's own chain_features."""
    nets = [make(ARCHS[arch], s) for s in range(3)]
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
    groups = hidden_groups(net)
    scaled, _ = transform(net, [groups[1]], "scale", seed=3)
    assert_same_function(net, scaled)
    fa, fb = chain_features(net, scale="unit"), chain_features(scaled, scale="unit")
    assert max(rel(a, b) for a, b in zip(fa, fb)) < TOL
    plain = chain_features(net), chain_features(scaled)
    assert rel(plain[0][1], plain[1][1]) > 1e-3  # without it chain 2 moves (non-vacuity)
