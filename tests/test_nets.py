"""Task architectures: config builds, shapes, the explicit GRU against nn.GRU, and every arch in the
population trainer's form (vmap over functional_call with stacked params and buffers)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from weightsim.chains import chain_layers
from weightsim.errors import ConfigError
from weightsim.nets import GRU, GRUNet, PlainNet, ResNet
from weightsim.nets.build import build_net

CONF = Path(__file__).parent.parent / "conf" / "arch"
# arch -> (input_shape, chains of the default config)
SHAPES = {"mlp": ((64,), 4), "mlp4": ((64,), 4), "plainnet5": ((3, 32, 32), 5), "plainnet5_leaky": ((3, 32, 32), 5), "plainnet6": ((3, 32, 32), 6),
          "resnet5": ((3, 32, 32), 5), "resnet_mlp12": ((1, 8, 8), 14), "gru2": ((12,), 3)}


DATA_INFO = {"vocab_size": 30}  # what a sequence dataset reports; fills null arch options, as in a run


def arch_cfg(name: str, **over) -> dict:
    cfg = {**OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml")), **over}
    return {k: DATA_INFO.get(k, v) if v is None else v for k, v in cfg.items()}


def test_every_arch_config_is_covered() -> None:
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(SHAPES)


def sample(shape: tuple[int, ...], n: int) -> torch.Tensor:
    if len(shape) == 1 and shape[0] == 12:  # character codes with trailing padding
        x = torch.randint(1, 60, (n, *shape))
        x[::2, -3:] = 0
        return x
    return torch.randn(n, *shape)


@pytest.mark.parametrize("name", list(SHAPES))
def test_builds_and_chains(name: str) -> None:
    shape, chains = SHAPES[name]
    net = build_net(arch_cfg(name), shape, 3)
    assert net(sample(shape, 4)).shape == (4, 3)
    assert len(chain_layers(net)) == chains


def test_resnet5_has_plainnet5_names_and_shapes() -> None:
    a = build_net(arch_cfg("plainnet5"), (3, 32, 32), 4)
    b = build_net(arch_cfg("resnet5"), (3, 32, 32), 4)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(a.eval()(x), b.eval()(x))  # the shortcuts change the function


def test_conv_options() -> None:
    assert not any(isinstance(m, nn.BatchNorm2d) for m in PlainNet((1, 8, 8), 2, norm="none").modules())
    assert any(isinstance(m, nn.LeakyReLU) for m in PlainNet((1, 8, 8), 2, activation="leaky_relu").modules())
    assert PlainNet((1, 8, 8), 2)[-1].in_features == 16 * 2 * 2  # auto pooling 8 -> 4 -> 2
    with pytest.raises(ConfigError, match="C x H x W"):
        PlainNet((64,), 2)
    with pytest.raises(ConfigError, match="norm"):
        PlainNet((1, 8, 8), 2, norm="ln")
    with pytest.raises(ConfigError, match="equal widths"):
        ResNet((1, 8, 8), 2, channels=[4, 8, 8, 8])


def test_gru_matches_torch_gru() -> None:
    torch.manual_seed(0)
    ref = nn.GRU(7, 5, num_layers=2, batch_first=True)
    mine = GRU(7, 5, num_layers=2)
    assert [(n, p.shape) for n, p in mine.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    mine.load_state_dict(ref.state_dict())
    x, h0 = torch.randn(4, 9, 7), torch.randn(2, 4, 5)
    out_ref, h_ref = ref(x, h0)
    out, h = mine(x, h0=h0)
    assert torch.allclose(out, out_ref, atol=1e-6) and torch.allclose(h, h_ref, atol=1e-6)
    # padding: a masked step leaves h unchanged, so padded sequences end like their unpadded prefix
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[0, 6:] = False
    _, h_pad = mine(x, mask=mask)
    _, h_short = ref(x[:1, :6])
    assert torch.allclose(h_pad[:, 0], h_short[:, 0], atol=1e-6)


def test_grunet_one_hot_and_padding() -> None:
    torch.manual_seed(0)
    net = GRUNet((5,), 2, hidden=4, vocab_size=11)
    codes = torch.tensor([[3, 1, 10, 0, 0], [3, 1, 10, 4, 0]])
    oh = net.onehot(codes)
    assert oh.shape == (2, 5, 10) and oh[0, 3:].abs().sum() == 0 and oh[0, 2, 9] == 1 and oh[0, 0, 2] == 1
    assert torch.equal(net.onehot(torch.tensor([[200]])), net.onehot(torch.tensor([[10]])))  # above vocab
    y = net(codes)
    y_short = net(codes[:1, :3])
    assert torch.allclose(y[0], y_short[0], atol=1e-6)  # trailing padding does not change the output


@pytest.mark.parametrize("name, over", [(n, {}) for n in SHAPES if n != "mlp4"] +
                         [("plainnet5", {"activation": "leaky_relu", "norm": "none"}), ("mlp4", {"hidden": 16})])
def test_population_vmap(name: str, over: dict) -> None:
    """K members through vmap(functional_call(meta template, (params, buffers))): each member's
    output and gradient equal its own forward / backward; BN running stats stay per member."""
    shape = SHAPES[name][0]
    if name in ("plainnet5", "plainnet6", "resnet5"):
        shape = (3, 16, 16)
    torch.manual_seed(0)
    members = [build_net(arch_cfg(name, **over), shape, 3) for _ in range(3)]
    params, buffers = stack_module_state(members)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    template = copy.deepcopy(members[0]).to("meta")
    x = torch.stack([sample(shape, 6) for _ in range(3)])
    y = vmap(lambda p, b, xb: functional_call(template, (p, b), (xb,)))(params, buffers, x)
    y.square().sum().backward()
    for k, m in enumerate(members):
        yk = m(x[k])
        assert torch.allclose(y[k], yk, atol=2e-4)
        yk.square().sum().backward()
        for n, p in m.named_parameters():
            assert (params[n].grad[k] - p.grad).abs().max() <= 1e-3 * p.grad.abs().max(), n  # float32, BN on 6 samples
        for n, b in m.named_buffers():
            if b.is_floating_point():
                assert torch.allclose(buffers[n][k], b, atol=1e-6), n  # per-member running stats
