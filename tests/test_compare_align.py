"""Weight matching: planted permutations recovered exactly on every architecture, noise, independent
nets, the ReLU-rescaling blind spot and its canonicalization, the function check, the loss barrier."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import weightsim.measures.align as align
from weightsim.measures.align import (AlignError, apply_perms, canonicalize_scale, interpolation_losses, loss_barrier,
                                     perm_spec, probe_batch, weight_matching)
from weightsim.nets import MLP, GRUNet, PlainNet, ResNet, ResNetMLP, Residual

ARCHS = {
    "mlp_20_64_5": lambda: MLP((20,), 5, hidden=64, depth=2),
    "mlp_20_48x3_5": lambda: MLP((20,), 5, hidden=48, depth=4),
    "plainnet5_bn": lambda: PlainNet((3, 16, 16), 10, channels=8),
    "resnet5": lambda: ResNet((3, 16, 16), 10, channels=8),
    "resnet_mlp": lambda: ResNetMLP((20,), 5, width=16, blocks=2),
    "gru2": lambda: GRUNet((7,), 4, hidden=8, layers=2, vocab_size=6),
}


def random_net(arch: str, seed: int, build=None) -> nn.Module:
    """A float64 net in eval mode with N(0, 1) weights and non-trivial BN statistics (var in [0.5, 1.5])."""
    net = (build or ARCHS[arch])().double().eval()
    g = torch.Generator().manual_seed(seed)
    sd = net.state_dict()
    for k, v in sd.items():
        sd[k] = (torch.rand(v.shape, generator=g, dtype=v.dtype) + 0.5) if k.endswith("running_var") \
            else torch.randn(v.shape, generator=g, dtype=v.dtype)
    align._load(net, sd)
    return net


def planted(net: nn.Module, seed: int) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of net with every hidden permutation group q applied (unit i of the copy = unit q[i])."""
    spec = perm_spec(net)
    g = torch.Generator().manual_seed(seed)
    q = {name: torch.randperm(n, generator=g) for name, n in spec.sizes.items()}
    b = copy.deepcopy(net)
    sd = net.state_dict()
    align._load(b, apply_perms({k: sd[k] for k in spec.covered}, spec, q))
    return b, q


def outputs(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x)


def n_covered(net: nn.Module) -> int:
    sd = net.state_dict()
    return sum(sd[k].numel() for k in perm_spec(net).covered)


def test_mlp_hand_planted_permutation_recovered():
    """The 20-64-5 MLP permuted by hand (rows of W1, b1, columns of W2): distance 0, perm = q^-1."""
    a = random_net("mlp_20_64_5", 0)
    q = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    b = copy.deepcopy(a)
    with torch.no_grad():
        b[1].weight.copy_(a[1].weight[q])
        b[1].bias.copy_(a[1].bias[q])
        b[3].weight.copy_(a[3].weight[:, q])
    x = probe_batch(a)
    assert torch.allclose(outputs(a, x), outputs(b, x), atol=1e-12)  # the planted copy is the same function
    al = weight_matching(a, b)
    assert al.naive_distance > 10 and al.distance == 0.0
    np.testing.assert_array_equal(al.perms["1"], np.argsort(q.numpy()))
    assert al.sweeps == 2  # one sweep finds it, the second gains nothing
    assert torch.allclose(outputs(al.aligned, x), outputs(b, x), atol=1e-12)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_planted_permutation_recovered_exactly(arch):
    a = random_net(arch, 0)
    b, q = planted(a, 1)
    x = probe_batch(a)
    assert torch.allclose(outputs(a, x), outputs(b, x), atol=1e-10)  # planting preserved the function
    assert any(not torch.equal(p, torch.arange(len(p))) for p in q.values())
    al = weight_matching(a, b)
    assert al.naive_distance > 1.0
    assert al.distance < 1e-12
    for g, p in q.items():
        np.testing.assert_array_equal(al.perms[g], np.argsort(p.numpy()), err_msg=g)
    assert torch.allclose(outputs(al.aligned, x), outputs(b, x), atol=1e-10)
    sa, sb = a.state_dict(), al.aligned.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in al.spec.covered)


def test_float32_nets_as_built():
    """Nets in their default float32 with torch's init: matching and the function check run in float64."""
    torch.manual_seed(0)
    a = ResNet((3, 16, 16), 10, channels=8).eval()
    b, q = planted(a, 1)
    al = weight_matching(a, b)
    assert al.distance == 0.0 and al.aligned.state_dict()["0.body.0.weight"].dtype == torch.float32
    np.testing.assert_array_equal(al.perms["0.body.0"], np.argsort(q["0.body.0"].numpy()))


def test_residual_stream_shares_one_permutation():
    """ResNet-5: the 4 conv layers are one group; ResNet-MLP: the stem and every block's second layer."""
    assert perm_spec(ResNet((3, 16, 16), 10, channels=8)).layers == {"0.body.0": ("0.body.0", "2.body.0", "4.body.0",
                                                                                  "6.body.0")}
    assert len(perm_spec(PlainNet((3, 16, 16), 10, channels=8)).groups) == 4
    spec = perm_spec(ResNetMLP((20,), 5, width=16, blocks=2))
    assert spec.layers == {"1.body.0": ("1.body.0", "2.body.3", "3.body.3"), "2.body.0": ("2.body.0",),
                           "3.body.0": ("3.body.0",)}
    # a shortcut around the first layer ties it to the input: nothing left to permute
    tied_to_input = nn.Sequential(Residual(nn.Sequential(nn.Linear(6, 6), nn.ReLU())), nn.Linear(6, 2))
    assert perm_spec(tied_to_input).groups == {}
    al = weight_matching(tied_to_input, copy.deepcopy(tied_to_input).apply(lambda m: torch.nn.init.normal_(m.weight)
                                                                           if isinstance(m, nn.Linear) else None))
    assert al.perms == {} and al.distance == al.naive_distance > 0


def test_fc_after_conv_permutes_channel_blocks():
    spec = perm_spec(PlainNet((3, 16, 16), 10, channels=8))  # maps 16 -> 8 -> 4 -> 2 -> 2 (pool while >= 4)
    head = [a for a in spec.groups["6.body.0"] if a.tensor == "8.weight"]
    assert head == [align.AxisRef("8.weight", 1, 1, 2 * 2)]  # the head reads 8 channels x 2 x 2


def test_gru_gate_blocks_share_the_hidden_permutation():
    spec = perm_spec(GRUNet((7,), 4, hidden=8, layers=2, vocab_size=6))
    assert spec.sizes == {"rnn[layer 0]": 8, "rnn[layer 1]": 8}
    ref = align.AxisRef
    assert set(spec.groups["rnn[layer 0]"]) == {
        ref("rnn.weight_ih_l0", 0, 3), ref("rnn.bias_ih_l0", 0, 3),  # r, z, n rows
        ref("rnn.weight_hh_l0", 0, 3), ref("rnn.weight_hh_l0", 1), ref("rnn.bias_hh_l0", 0, 3),
        ref("rnn.weight_ih_l1", 1)}  # the next layer's input columns
    assert ref("fc.weight", 1) in spec.groups["rnn[layer 1]"]


@pytest.mark.parametrize("arch", ["mlp_20_64_5", "plainnet5_bn", "resnet5", "gru2"])
@pytest.mark.parametrize("sigma", [1e-3, 1e-2])
def test_noise_after_permuting(arch, sigma):
    """Exact perms; the distance left is the noise norm, ~ sigma sqrt(P)."""
    a = random_net(arch, 0)
    b, q = planted(a, 1)
    g = torch.Generator().manual_seed(2)
    sd = b.state_dict()
    spec = perm_spec(a)
    noise = {k: sigma * torch.randn(sd[k].shape, generator=g, dtype=sd[k].dtype) for k in spec.covered}
    align._load(b, {k: sd[k] + noise[k] for k in spec.covered})
    al = weight_matching(a, b)
    for name, p in q.items():
        np.testing.assert_array_equal(al.perms[name], np.argsort(p.numpy()))
    norm = math.sqrt(sum(float((v ** 2).sum()) for v in noise.values()))
    assert al.distance == pytest.approx(norm, rel=1e-9)
    assert al.distance == pytest.approx(sigma * math.sqrt(n_covered(a)), rel=0.1)


# distance / naive distance of independent N(0, 1) nets stays below: the 20-64-5 MLP gives ~0.75; the
# ResNet's one tied permutation of 8 channels (8! choices, each moving every layer) gains little
RATIO = {"mlp_20_64_5": 0.8, "mlp_20_48x3_5": 0.9, "plainnet5_bn": 0.95, "resnet5": 1.0, "resnet_mlp": 0.9,
         "gru2": 0.97}


@pytest.mark.parametrize("arch", list(RATIO))
def test_independent_nets_get_closer(arch):
    a, b = random_net(arch, 0), random_net(arch, 7)
    al = weight_matching(a, b)
    assert al.distance < RATIO[arch] * al.naive_distance
    x = probe_batch(a)
    assert torch.allclose(outputs(al.aligned, x), outputs(b, x), atol=1e-10)


def test_deep_mlp_recovered_for_every_visit_order():
    """20-48-48-48-5: exact recovery in 20 of 20 coordinate-descent seeds (each a different plant)."""
    a = random_net("mlp_20_48x3_5", 0)
    for seed in range(20):
        b, q = planted(a, 100 + seed)
        al = weight_matching(a, b, seed=seed)
        assert al.distance < 1e-12
        assert all(np.array_equal(al.perms[g], np.argsort(p.numpy())) for g, p in q.items())


def test_restarts_escape_a_local_optimum_of_a_deep_residual_net():
    """ResNet-MLP 64 x 6 blocks, one planted copy: the visit order of seed 3 ends in a local optimum
    (the residual stream's permutation is fixed early from wrongly permuted block weights), seed 4
    finds the plant; restarts keep the better."""
    a = random_net("", 0, lambda: ResNetMLP((20,), 5, width=64, blocks=6))
    b, q = planted(a, 103)
    stuck = weight_matching(a, b, seed=3)
    assert stuck.distance > 1.0 and stuck.distance < stuck.naive_distance
    best = weight_matching(a, b, seed=3, restarts=2)
    assert best.distance < 1e-12
    assert all(np.array_equal(best.perms[g], np.argsort(p.numpy())) for g, p in q.items())
    with pytest.raises(AlignError, match="restarts"):
        weight_matching(a, b, restarts=0)


def relu_rescaled(net: nn.Module, seed: int) -> nn.Module:
    """Per hidden unit: incoming row and bias times c > 0, outgoing column over c (same function)."""
    out = copy.deepcopy(net)
    g = torch.Generator().manual_seed(seed)
    linears = [m for m in out if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, nxt in zip(linears[:-1], linears[1:]):
            c = torch.exp(2 * torch.rand(lin.out_features, generator=g, dtype=torch.float64) - 1)
            lin.weight.mul_(c[:, None])
            lin.bias.mul_(c)
            nxt.weight.div_(c[None, :])
    return out


def test_relu_rescaling_blind_spot_and_canonicalization():
    a = MLP((30,), 3, hidden=[40, 40], depth=3).double().eval()
    b = relu_rescaled(a, 0)
    x = probe_batch(a)
    assert torch.allclose(outputs(a, x), outputs(b, x), atol=1e-12)
    al = weight_matching(a, b)
    assert al.naive_distance > 1.0
    assert al.distance == pytest.approx(al.naive_distance, rel=1e-12)  # same function, nothing to permute
    ca, cb = canonicalize_scale(a), canonicalize_scale(b)
    assert torch.allclose(outputs(ca, x), outputs(a, x), atol=1e-12)
    assert weight_matching(ca, cb).distance < 1e-12
    # canonical form is also permutation-equivariant: a rescaled *and* permuted copy still aligns to 0
    bp, _ = planted(b, 4)
    assert weight_matching(ca, canonicalize_scale(bp)).distance < 1e-12
    # conv nets without BatchNorm: kernels per output channel, the head's s*s column blocks
    conv = PlainNet((3, 16, 16), 10, channels=8, norm="none").double().eval()
    xc = probe_batch(conv)
    cc = canonicalize_scale(conv)
    assert torch.allclose(outputs(cc, xc), outputs(conv, xc), atol=1e-12)
    w = cc.state_dict()["2.body.0.weight"]
    rows = torch.cat([w.reshape(8, -1), cc.state_dict()["2.body.0.bias"][:, None]], 1)
    assert torch.allclose(torch.linalg.norm(rows, dim=1), torch.ones(8, dtype=torch.float64))
    with pytest.raises(AlignError, match="canonicalize_scale"):
        canonicalize_scale(PlainNet((3, 16, 16), 10, channels=8))


def test_function_check_catches_a_broken_spec(monkeypatch):
    a = random_net("plainnet5_bn", 0)
    b, _ = planted(a, 1)
    monkeypatch.setattr(align, "_bn_axes", lambda layer: [])  # forget the BatchNorms
    with pytest.raises(AlignError, match="different function"):
        weight_matching(a, b)


def test_function_check_catches_a_wrong_axis(monkeypatch):
    a = random_net("gru2", 0)
    b, _ = planted(a, 1)
    own = align._own_axes
    # the recurrent weight's columns left out of its layer's permutation
    monkeypatch.setattr(align, "_own_axes", lambda layer: [x for x in own(layer) if not (
        x.axis == 1 and "weight_hh" in x.tensor)])
    with pytest.raises(AlignError, match="different function"):
        weight_matching(a, b)


def test_different_architectures_refused():
    with pytest.raises(AlignError, match="one architecture"):
        weight_matching(random_net("mlp_20_64_5", 0), random_net("mlp_20_48x3_5", 0))
    with pytest.raises(AlignError, match="one architecture"):
        weight_matching(MLP((20,), 5, hidden=64, depth=2), MLP((20,), 5, hidden=32, depth=2))


def trained_mlp(seed: int, x, y) -> nn.Module:
    """A 20-64-5 ReLU MLP fit by 200 full-batch gradient steps (train loss ~0.06)."""
    torch.manual_seed(seed)
    net = MLP((20,), 5, hidden=64, depth=2).double()
    for _ in range(200):
        net.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.5 * p.grad  # theta <- theta - lr grad
    return net.eval()


@torch.no_grad()
def ce(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(nn.functional.cross_entropy(net(x), y))


def test_loss_barrier():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=g, dtype=torch.float64)
    y = (x[:, :5] * x[:, 5:10]).argmax(1)  # a non-linear task
    a = trained_mlp(0, x, y)
    b, _ = planted(a, 1)
    lambdas, losses = interpolation_losses(a, b, x, y, n_lambda=5)
    assert losses[0] == pytest.approx(ce(a, x, y), rel=1e-12)
    assert losses[-1] == pytest.approx(losses[0], rel=1e-12)
    assert loss_barrier(a, b, x, y) > 0.1  # a permuted copy is far away on the straight line
    assert loss_barrier(a, weight_matching(a, b).aligned, x, y) == pytest.approx(0.0, abs=1e-12)
    # the barrier subtracts the line through the end losses: hand-computed at lambda = 1/2
    c = random_net("mlp_20_64_5", 3)
    mid = copy.deepcopy(a)
    align._load(mid, {k: (v + c.state_dict()[k]) / 2 for k, v in a.state_dict().items()})
    lam, ls = interpolation_losses(a, c, x, y, n_lambda=3)
    assert ls[1] == pytest.approx(ce(mid, x, y), rel=1e-12)
    assert loss_barrier(a, c, x, y, n_lambda=3) == pytest.approx(max(0.0, ls[1] - (ls[0] + ls[2]) / 2), abs=1e-12)
    # softmax regression: the loss is convex in the weights, so no barrier between any two
    lin_a, lin_b = (MLP((20,), 5, depth=1).double() for _ in range(2))
    assert loss_barrier(lin_a, lin_b, x, y) == pytest.approx(0.0, abs=1e-12)


def test_loss_barrier_interpolates_bn_statistics():
    a, c = random_net("plainnet5_bn", 0), random_net("plainnet5_bn", 1)
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64)
    y = torch.arange(8) % 10
    _, ls = interpolation_losses(a, c, x, y, n_lambda=3)
    assert ls[0] == pytest.approx(ce(a, x, y), rel=1e-12)
    assert ls[2] == pytest.approx(ce(c, x, y), rel=1e-12)
    mid = copy.deepcopy(a)
    align._load(mid, {k: (v + c.state_dict()[k]) / 2 for k, v in a.state_dict().items()})
    assert ls[1] == pytest.approx(ce(mid, x, y), rel=1e-12)


def test_barrier_with_bn_statistics_reestimated():
    a, c = random_net("plainnet5_bn", 0), random_net("plainnet5_bn", 1)
    x = torch.randn(32, 3, 16, 16, dtype=torch.float64)
    y = torch.arange(32) % 10
    ref = copy.deepcopy(a)
    align.reestimate_bn(ref, x)
    h = torch.relu(ref[0].body[0](x))  # the first BN's input: conv -> ReLU
    assert torch.allclose(ref[0].body[2].running_mean, h.mean((0, 2, 3)), atol=1e-12)
    assert torch.allclose(ref[0].body[2].running_var, h.transpose(0, 1).reshape(8, -1).var(1), atol=1e-12)
    assert not ref.training and torch.equal(ref[0].body[0].weight, a[0].body[0].weight)
    _, ls = interpolation_losses(a, c, x, y, n_lambda=3, bn_batch=x)
    _, raw = interpolation_losses(a, c, x, y, n_lambda=3)
    assert ls[0] == pytest.approx(ce(ref, x, y), rel=1e-12) and ls[0] != pytest.approx(raw[0], rel=1e-3)
    assert loss_barrier(a, c, x, y, n_lambda=3, bn_batch=x) == pytest.approx(
        max(0.0, ls[1] - (ls[0] + ls[2]) / 2), abs=1e-12)


def test_aligned_distance_matrix():
    nets = [random_net("mlp_20_64_5", s) for s in range(3)]
    nets.append(planted(nets[0], 9)[0])  # net 3 is net 0 permuted
    d = align.aligned_distances(nets)
    assert d.shape == (4, 4) and np.array_equal(d, d.T) and np.all(np.diag(d) == 0)
    assert d[0, 3] < 1e-12 and d[0, 1] > 1.0 and d[1, 3] > 1.0
    assert d[1, 2] == weight_matching(nets[1], nets[2]).distance
    cross = align.aligned_distances(nets[:2], nets[2:])
    assert cross.shape == (2, 2) and cross[0, 1] == d[0, 3] and cross[1, 0] == d[1, 2]
