"""The architecture spec (weightsim/nets/spec.py): each symmetry it claims is checked against a
transformation that keeps the function, and each claim it does not make fails that check."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.test_import_graph import module_imports, room
from weightsim.errors import ChainError, ConfigError
from weightsim.nets import MLP, PlainNet, ResNet, ResNetMLP, Residual, Unit, spec
from weightsim.nets.mlp import linear_stack

Z = torch.linspace(-4, 4, 161, dtype=torch.float64)  # both signs, and 0
C = 2.5  # a positive scale


def holds(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-12, atol=1e-12)  # float64 on one grid: only rounding differs


# -- the registry's claims, one activation at a time ---------------------------------------------------
@pytest.mark.parametrize("name", list(spec.ACTIVATIONS))
def test_each_activation_has_exactly_the_identities_it_claims(name):
    a = spec.ACTIVATIONS[name]
    f = a.build()
    assert holds(f(-Z), -f(Z)) == a.odd
    assert holds(f(C * Z), C * f(Z)) == a.positive_homogeneous
    assert holds(f(-Z), f(Z) - Z) == a.even_linear


def _unit_map(name: str, seed: int = 0) -> tuple[nn.Sequential, torch.Tensor]:
    """A 5-4-3 float64 MLP with activation ``name`` and 32 probe inputs."""
    torch.manual_seed(seed)
    net = nn.Sequential(*linear_stack([5, 4, 3], spec.ACTIVATIONS[name].module)).double()
    return net, torch.randn(32, 5, dtype=torch.float64)


def _moved(net: nn.Sequential, unit: int, into: float, out: float) -> nn.Sequential:
    """A copy with hidden unit ``unit``'s incoming [w; b] times ``into`` and outgoing column times ``out``."""
    moved = copy.deepcopy(net)
    with torch.no_grad():
        moved[0].weight[unit] *= into
        moved[0].bias[unit] *= into
        moved[2].weight[:, unit] *= out
    return moved


@pytest.mark.parametrize("name", list(spec.ACTIVATIONS))
def test_a_units_sign_flip_and_scale_keep_the_net_exactly_when_claimed(name):
    a = spec.ACTIVATIONS[name]
    net, x = _unit_map(name)
    with torch.no_grad():
        y = net(x)
        flipped = _moved(net, 1, -1.0, -1.0)(x)  # [w; b] -> -[w; b], a -> -a
        scaled = _moved(net, 1, C, 1 / C)(x)  # [w; b] -> c [w; b], a -> a / c
        leaked = _moved(net, 1, -1.0, 1.0)(x)  # [w; b] -> -[w; b], a kept
        linear = (x @ net[0].weight[1] + net[0].bias[1])[:, None] * net[2].weight[:, 1]  # a (w.x + b)
    assert holds(flipped, y) == a.odd
    assert holds(scaled, y) == a.positive_homogeneous
    assert holds(leaked + linear, y) == a.even_linear


def test_sign_classes_are_expand_and_clusters():
    classes = {n: a.sign_class for n, a in spec.ACTIVATIONS.items()}
    assert classes == {"tanh": "odd", "relu": "relu", "leaky_relu": None, "softplus": "even_linear",
                       "gelu": "even_linear", "silu": "even_linear"}


def test_a_module_is_an_activation_only_with_its_default_arguments():
    assert spec.activation_name(nn.Softplus()) == "softplus"
    assert spec.activation_name(nn.Softplus(beta=2)) is None
    assert spec.activation_name(nn.GELU(approximate="tanh")) is None
    assert spec.activation_name(nn.LeakyReLU(0.2)) == "leaky_relu"
    assert spec.activation_name(nn.Sigmoid()) is None


# -- module kinds -------------------------------------------------------------------------------------
def _instance(kind: type) -> nn.Module:
    return kind(2) if kind in (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d) else kind()


@pytest.mark.parametrize("kind", sorted(set(spec.PASS_THROUGH), key=lambda k: k.__name__), ids=lambda k: k.__name__)
def test_positively_homogeneous_modules_are_exactly_those_that_pass_a_positive_scale(kind):
    m = _instance(kind).eval()  # dropout: eval mode, the map the weights are compared under
    x = torch.randn(2, 3, 8, *(() if kind is nn.Dropout1d else (8,)), dtype=torch.float64)
    assert holds(m(C * x), C * m(x)) == (kind in spec.POSITIVELY_HOMOGENEOUS)


def test_arch_activations_are_the_ones_the_walk_knows():
    for name in ("tanh", "relu", "leaky_relu", "gelu"):
        assert len(spec.chain_layers(MLP((6,), 2, hidden=4, depth=3, activation=name))) == 3
    for name in ("softplus", "silu"):  # registered for recover; the chain walk refuses them
        with pytest.raises(ConfigError, match=rf"unknown arch.activation '{name}': choose from tanh, relu, "
                                              rf"leaky_relu, gelu"):
            MLP((6,), 2, activation=name)
        with pytest.raises(ChainError, match="not supported by the chain rule"):
            spec.chain_layers(nn.Sequential(*linear_stack([6, 4, 2], spec.ACTIVATIONS[name].module)))
    with pytest.raises(ConfigError, match="unknown arch.activation 'swish'"):
        MLP((6,), 2, depth=1, activation="swish")  # no hidden layer: still refused


# -- tied units and permutation groups -----------------------------------------------------------------
def test_every_hidden_layer_of_an_mlp_is_its_own_permutation_group():
    net = MLP((6,), 2, hidden=4, depth=4)
    assert spec.permutation_groups(net) == {"1": [0], "3": [1], "5": [2]}


def test_residual_shortcuts_tie_the_stream_into_one_group():
    net = ResNet((3, 16, 16), 4, units=3, channels=6)  # unit 1 plain, units 2, 3 residual, then the FC
    layers = spec.chain_layers(net)
    assert spec.residual_ties(net, layers) == [(1, 0), (2, 1)]
    assert spec.permutation_groups(net) == {"0.body.0": [0, 1, 2]}
    plain = PlainNet((3, 16, 16), 4, units=3, channels=6)
    assert list(spec.permutation_groups(plain).values()) == [[0], [1], [2]]
    res = ResNetMLP((10,), 3, width=6, blocks=2)  # stem, then blocks of two layers: the second joins the stem
    assert spec.permutation_groups(res) == {"1.body.0": [0, 2, 4], "2.body.0": [1], "3.body.0": [3]}


def test_units_tied_to_the_input_or_the_output_are_fixed():
    into = nn.Sequential(Residual(nn.Sequential(nn.Linear(4, 4), nn.ReLU())), nn.Linear(4, 3), nn.ReLU(),
                         nn.Linear(3, 2))
    assert spec.permutation_groups(into) == {"1": [1]}  # layer 0 carries the input's units
    out = nn.Sequential(Unit(nn.Sequential(nn.Linear(4, 2), nn.ReLU())), Residual(nn.Sequential(nn.Linear(2, 2))))
    assert spec.permutation_groups(out) == {}  # layer 0 is tied to the output's units


# -- positive scale ----------------------------------------------------------------------------------
def test_scale_breakers_name_what_stops_a_positive_scale():
    assert spec.scale_breakers(MLP((6,), 2, hidden=4, depth=3)) == []
    assert spec.scale_breakers(PlainNet((3, 8, 8), 2, units=2, channels=4, norm="none")) == []
    assert spec.scale_breakers(MLP((6,), 2, hidden=4, depth=3, activation="tanh")) == ["2 (Tanh)", "4 (Tanh)"]
    assert spec.scale_breakers(PlainNet((3, 8, 8), 2, units=1, channels=4)) == ["0.body.2 (BatchNorm2d)"]
    assert spec.scale_breakers(ResNet((3, 8, 8), 2, units=2, channels=4, norm="none")) == ["2 (Residual)"]


# -- where the spec sits --------------------------------------------------------------------------------
def test_nets_import_nothing_above_them():
    graph = module_imports()
    above = {t for m, targets in graph.items() if room(m) == "nets" for t in targets if room(t) != "nets"}
    assert "nets.spec" in graph and above == {"errors"}
