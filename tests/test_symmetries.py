"""Every function-preserving symmetry of every supported net leaves the default chain features unchanged.

One harness for all architectures. The symmetries are written here from the architectures (which
parameters a hidden unit owns), independently of the chain code:

- ``perm``: a permutation of every hidden layer's units, tied along residual streams; for the GRU a
  *signed* permutation (tanh is odd: the candidate n and the hidden state may flip sign, the
  sigmoid gates r, z may not).
- ``bn_scale``: every weight layer whose output reaches a BatchNorm through ReLU / leaky ReLU /
  pooling gets a positive per-channel scale a (kernel rows and bias); the BN absorbs it (running
  mean times a, running variance times a^2, so eval mode is the same function).
- ``bn_affine``: a BN's gamma and beta times a > 0 and the next weight layer's input channel / a
  (tied along residual streams: every BN writing the stream and every layer reading it).
- ``sign``: a tanh MLP's hidden units flip sign (rows, bias and the next layer's columns).

Each test checks that the transformed net computes the same function on random inputs, that the
parameters really changed, and that every chain feature agrees to 1e-5 relative, under the default
options and the options that claim the same invariance. Non-vacuity: a perturbed weight or
permuted input coordinates move the features by far more. BatchNorms use eps = 0 so that the
absorbed scale is exactly function-preserving in eval mode (with eps > 0 it is so up to eps).
"""

from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
from torch import nn

from weightsim.chains import chain_features, describe_chains
from weightsim.nets import MLP, GRUNet, PlainNet, ResNet, ResNetMLP

TOL = 1e-5
BNS = (nn.BatchNorm1d, nn.BatchNorm2d)

ARCHS = {
    "mlp4": lambda: MLP((3, 4, 4), 3, hidden=[12, 10, 8], depth=4),
    "plainnet5": lambda: PlainNet((3, 8, 8), 3, units=4, channels=4),
    "plainnet6": lambda: PlainNet((3, 8, 8), 3, units=5, channels=[4, 5, 4, 3, 4]),
    "resnet5": lambda: ResNet((3, 8, 8), 3, units=4, channels=4),
    "plainnet5_leaky": lambda: PlainNet((3, 8, 8), 3, units=4, channels=4, activation="leaky_relu"),
    "resnet_mlp12": lambda: ResNetMLP((3, 4, 4), 3, width=6, blocks=6),
    "gru2": lambda: GRUNet((6,), 3, hidden=5, layers=2, vocab_size=8),
    "gru2_nobias": lambda: GRUNet((6,), 3, hidden=5, layers=2, vocab_size=8, bias=False),
    "mlp4_tanh": lambda: MLP((3, 4, 4), 3, hidden=[12, 10, 8], depth=4, activation="tanh"),
}
BN_ARCHS = ["plainnet5", "plainnet6", "resnet5", "plainnet5_leaky", "resnet_mlp12"]
# (arch, symmetry): every cell of the table in docs/chains.md that is covered by default
CELLS = [(a, "perm") for a in ARCHS] + [(a, "bn_scale") for a in BN_ARCHS] + \
    [(a, "bn_affine") for a in BN_ARCHS] + \
    [("mlp4_tanh", "sign")]
# options that claim the default's invariances (sketch: budget small enough that chains >= 2 sketch)
OPTION_SETS = [dict(), dict(bias=True), dict(remedy="sketch", sketch_dim=24), dict(scale="fro"),
               dict(scale="unit"), dict(bias=True, remedy="sketch", sketch_dim=24, scale="fro")]


def make(arch: str | Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """A small random net (an ARCHS key or a builder) in double precision with non-trivial biases and
    BN parameters / statistics."""
    torch.manual_seed(seed)
    net = (ARCHS[arch] if isinstance(arch, str) else arch)().double().eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.5)
        for m in net.modules():
            if isinstance(m, BNS):
                m.eps = 0.0
                m.running_mean.copy_(torch.randn_like(m.running_mean))
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
                m.weight.copy_((torch.rand_like(m.weight) + 0.5) * torch.sign(torch.randn_like(m.weight)))
    return net


def inputs(net: nn.Module, n: int = 32) -> torch.Tensor:
    if isinstance(net, GRUNet):
        codes = torch.randint(1, net.onehot.vocab + 3, (n, *net.input_shape))  # some codes above vocab
        codes[: n // 2, -2:] = 0  # trailing padding for half of the batch
        return codes
    return torch.randn(n, *net.input_shape, dtype=torch.float64)


# -- the architecture, read off the modules (not through the chain code) ---------------------------
def weight_layers(net: nn.Module) -> list[tuple[str, nn.Module, list[str]]]:
    """(name, Linear/Conv2d, names of the BNs that follow it) in forward order (non-GRU nets)."""
    seq = []
    for name, m in net.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            seq.append((name, m, []))
        elif isinstance(m, BNS):
            seq[-1][2].append(name)
    return seq


def _input_entry(layer: nn.Module, prev: nn.Module, name: str) -> tuple[str, object]:
    if isinstance(layer, nn.Linear) and isinstance(prev, nn.Conv2d):  # FC over a flattened c x s x s map
        return (f"{name}.weight", ("in_spatial", layer.in_features // prev.out_channels))
    return (f"{name}.weight", "in")


def hidden_groups(net: nn.Module) -> list[list[tuple[str, object]]]:
    """Per independent hidden symmetry, the (parameter, how it is acted on) entries.
    "out": rows (weight rows, bias); "vec": BN vectors; "in": weight columns; "gate_out": rows of each
    of the three GRU gate blocks (the n block also takes the sign); ("in_spatial", s*s): FC columns."""
    if isinstance(net, GRUNet):
        groups = []
        for layer in range(net.rnn.num_layers):
            g = [(f"rnn.{k}_l{layer}", "gate_out") for k in ("weight_ih", "bias_ih", "weight_hh", "bias_hh")]
            g += [(f"rnn.weight_hh_l{layer}", "in"),
                  (f"rnn.weight_ih_l{layer + 1}" if layer + 1 < net.rnn.num_layers else "fc.weight", "in")]
            groups.append(g)
        return groups
    seq = weight_layers(net)
    groups = []
    for i, (name, m, bns) in enumerate(seq[:-1]):
        g = [(f"{name}.weight", "out"), (f"{name}.bias", "out")]
        g += [(f"{bn}.{k}", "vec") for bn in bns for k in ("weight", "bias", "running_mean", "running_var")]
        groups.append(g + [_input_entry(seq[i + 1][1], m, seq[i + 1][0])])
    return tie_residual_streams(net, groups)


def tie_residual_streams(net: nn.Module, groups: list[list]) -> list[list]:
    """Per-layer groups -> independent groups: what acts on a residual stream acts on all its writers.
    ResNet: every unit writes the stream; ResNet-MLP: the stem and each block's second layer do."""
    if isinstance(net, ResNet):
        return [sum(groups, [])]
    if isinstance(net, ResNetMLP):
        return [groups[0] + sum(groups[2::2], [])] + groups[1::2]
    return groups


def _act(t: torch.Tensor, mode, perm, sign, scale) -> torch.Tensor:
    """New unit i = sign_i * scale_i * old unit perm_i, applied to one parameter."""
    n = perm.numel()
    if mode == "out":
        return t[perm] * (sign * scale).view(-1, *[1] * (t.dim() - 1))
    if mode == "vec":
        return t[perm]
    if mode == "gate_out":  # r, z: permuted only; n (and so the hidden state): signed
        v = t.view(3, n, *t.shape[1:])[:, perm].clone()
        v[2] *= sign.view(-1, *[1] * (t.dim() - 1))
        return v.reshape(t.shape)
    if mode == "in":
        return t[:, perm] * (sign / scale).view(1, -1, *[1] * (t.dim() - 2))
    v = t.view(t.shape[0], n, mode[1])  # ("in_spatial", s*s)
    return (v[:, perm] * (sign / scale).view(1, -1, 1)).reshape(t.shape)


def apply_groups(net: nn.Module, groups, seed: int, perm: bool, sign: bool, scale: bool) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(net)
    state = dict(out.named_parameters()) | dict(out.named_buffers())
    with torch.no_grad():
        for group in groups:
            name0, mode0 = group[0]
            n = state[name0].shape[0] // (3 if mode0 == "gate_out" else 1)
            p = torch.randperm(n, generator=g) if perm else torch.arange(n)
            s = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double() if sign else torch.ones(n).double()
            s[0] = -1.0 if sign else 1.0  # at least one flip
            a = torch.rand(n, generator=g, dtype=torch.float64) * 2.5 + 0.3 if scale else torch.ones(n).double()
            for name, mode in group:
                if name in state:
                    state[name].copy_(_act(state[name], mode, p, s, a))
    return out


def bn_scale(net: nn.Module, seed: int) -> nn.Module:
    """Each weight layer followed by act -> BN: rows and bias times a > 0, BN running mean times a,
    running variance times a^2. ReLU(a x) = a ReLU(x) and BN(a x) = BN(x): the same function."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(net)
    with torch.no_grad():
        for name, m, bns in weight_layers(out):
            if not bns:
                continue
            a = torch.rand(m.weight.shape[0], generator=g, dtype=torch.float64) * 4.5 + 0.1
            m.weight.mul_(a.view(-1, *[1] * (m.weight.dim() - 1)))
            m.bias.mul_(a)
            bn = out.get_submodule(bns[0])
            bn.running_mean.mul_(a)
            bn.running_var.mul_(a ** 2)
    return out


def bn_affine_groups(net: nn.Module) -> list[list[tuple[str, object]]]:
    """A BN's gamma and beta times a > 0 and the columns of the weight layer that reads it / a
    (max pool and flatten between commute with a); tied along residual streams: every BN that writes
    the stream takes the same a, every layer that reads it the same 1 / a."""
    seq = weight_layers(net)
    groups = [[(f"{bns[0]}.weight", "out"), (f"{bns[0]}.bias", "out"), _input_entry(seq[i + 1][1], m, seq[i + 1][0])]
              for i, (name, m, bns) in enumerate(seq[:-1])]
    return tie_residual_streams(net, groups)


def transform(net: nn.Module, symmetry: str, seed: int = 1) -> nn.Module:
    if symmetry == "perm":
        return apply_groups(net, hidden_groups(net), seed, perm=True, sign=isinstance(net, GRUNet), scale=False)
    if symmetry == "sign":
        return apply_groups(net, hidden_groups(net), seed, perm=False, sign=True, scale=False)
    if symmetry == "bn_scale":
        return bn_scale(net, seed)
    if symmetry == "bn_affine":
        return apply_groups(net, bn_affine_groups(net), seed, perm=False, sign=False, scale=True)
    raise ValueError(symmetry)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / a.norm().clamp_min(1e-300))


def assert_same_function(a: nn.Module, b: nn.Module) -> None:
    x = inputs(a)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert rel(ya, yb) < 1e-10, f"the transformation changed the function ({rel(ya, yb):.1e})"
    moved = max(rel(p.flatten(), q.flatten()) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert moved > 0.1, "the transformation did nothing"


def worst(a: nn.Module, b: nn.Module, **kw) -> float:
    return max(rel(x, y) for x, y in zip(chain_features(a, **kw), chain_features(b, **kw)))


# -- the tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, symmetry", CELLS)
def test_default_features_invariant(arch: str, symmetry: str) -> None:
    net = make(arch)
    moved = transform(net, symmetry)
    assert_same_function(net, moved)
    for kw in OPTION_SETS:
        w = worst(net, moved, **kw)
        assert w < TOL, f"{arch} {symmetry} {kw}: a chain feature moved by {w:.2e}"


@pytest.mark.parametrize("arch", BN_ARCHS + ["gru2"])
def test_all_symmetries_at_once(arch: str) -> None:
    """Permutations after the BN-absorbed scales after the BN affine scales: still the same features."""
    net = make(arch)
    moved = net
    for i, symmetry in enumerate(("bn_affine", "bn_scale", "perm")):
        moved = transform(moved, symmetry, seed=10 + i)
    assert_same_function(net, moved)
    assert worst(net, moved) < TOL


@pytest.mark.parametrize("arch", list(ARCHS))
def test_non_vacuity(arch: str) -> None:
    """A real change moves the features far more than the tolerance: one weight of the second weight
    layer perturbed (chains >= 2; GRU: an n-gate input weight of layer 2, the gates r, z do not
    reach later chains), the input coordinates permuted (every chain)."""
    net = make(arch)
    perturbed, shuffled = copy.deepcopy(net), copy.deepcopy(net)
    weights = [p for n, p in perturbed.named_parameters() if p.dim() >= 2 and "weight_hh" not in n]
    first = next(p for n, p in shuffled.named_parameters() if p.dim() >= 2)
    with torch.no_grad():
        weights[1][-1].view(-1)[0] += 1.0
        first.copy_(first[:, torch.roll(torch.arange(first.shape[1]), 1)])
    for kw in (dict(), dict(bias=True, remedy="sketch", sketch_dim=24)):
        f, fp, fs = chain_features(net, **kw), chain_features(perturbed, **kw), chain_features(shuffled, **kw)
        assert min(rel(a, b) for a, b in zip(f[1:], fp[1:])) > 1e-3, f"{arch} {kw}: perturbation not seen"
        assert min(rel(a, b) for a, b in zip(f, fs)) > 1e-3, f"{arch} {kw}: input permutation not seen"


@pytest.mark.parametrize("arch", BN_ARCHS)
def test_bn_ignore_is_the_paper_chain(arch: str) -> None:
    """bn=ignore gives exactly the chain of the same weights with every BN removed (the paper's
    BN-ignoring chain), and that chain is not invariant to the BN-absorbed scale (the ablation)."""
    net = make(arch)
    stripped = copy.deepcopy(net)
    for name, m in list(stripped.named_modules()):
        if isinstance(m, BNS):
            parent, _, child = name.rpartition(".")
            setattr(stripped.get_submodule(parent), child, nn.Identity())
    for kw in (dict(), dict(bias=True), dict(remedy="sketch", sketch_dim=24)):
        ign, plain = chain_features(net, bn="ignore", **kw), chain_features(stripped, **kw)
        assert all(torch.equal(a, b) for a, b in zip(ign, plain))
        default = chain_features(net, **kw)
        assert min(rel(a, b) for a, b in zip(ign[:-1], default[:-1])) > 1e-3  # the BN rule did something
    assert worst(net, transform(net, "bn_scale"), bn="ignore") > 0.1


def test_which_chains_normalize_and_gru_parts() -> None:
    """The walk normalizes exactly the layers whose output reaches a BN through homogeneous modules:
    not the FC head, not a tanh + BN layer; the GRU chain has 6, 2 x 6 and 2 x 2 parts."""
    plain = describe_chains(make("plainnet5"))
    assert [d["bn_unit_columns"] for d in plain] == [True] * 4 + [False]
    tanh = describe_chains(PlainNet((3, 8, 8), 3, units=4, channels=4, activation="tanh"))
    assert not any(d["bn_unit_columns"] for d in tanh)
    assert [d["parts"] for d in describe_chains(make("gru2"))] == [6, 12, 4]
    assert [d["bn"] for d in plain] == ["invariant"] * 5


def test_tanh_bn_net_sign_symmetry() -> None:
    """conv -> tanh -> BN: flipping a channel's sign (kernel, bias, BN mean and gamma) keeps the
    function; the BN is left out of the chain (nothing to absorb) and the features stay the same."""
    torch.manual_seed(0)
    net = PlainNet((3, 8, 8), 3, units=4, channels=4, activation="tanh").double().eval()
    for m in net.modules():
        if isinstance(m, BNS):
            m.running_mean.normal_()
            m.weight.data.normal_()
    flipped = copy.deepcopy(net)
    with torch.no_grad():
        for name, m, bns in weight_layers(flipped)[:-1]:
            s = torch.ones(m.weight.shape[0], dtype=torch.float64)
            s[::2] = -1
            m.weight.mul_(s.view(-1, 1, 1, 1))
            m.bias.mul_(s)
            bn = flipped.get_submodule(bns[0])
            bn.running_mean.mul_(s)
            bn.weight.mul_(s)
    assert_same_function(net, flipped)
    for kw in OPTION_SETS[:3]:
        assert worst(net, flipped, **kw) < TOL
