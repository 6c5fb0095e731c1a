"""One description of an architecture, read by the chains, weight matching, the measures and recover.

- **Activations** (``ACTIVATIONS``): name -> module, and which symmetries of a hidden unit the
  activation allows (sign flip, positive scale, sign flip up to a linear term).
- **Module kinds**: which modules act per unit (``ELEMENTWISE``), are BatchNorms, pass units through
  without mixing them (``PASS_THROUGH``), or hand a positive per-unit scale on unchanged
  (``POSITIVELY_HOMOGENEOUS``).
- **The walk** (``chain_layers``): a net's weight layers in chain (forward) order, each as blocks of
  parameters, with the BatchNorms around it and whether a BN absorbs a positive scale of its units.
- **Tied units** (``residual_ties``, ``permutation_groups``): a shortcut ``y = x + body(x)`` ties the
  units of body's last layer to the stream x; the hidden layers whose units one permutation moves.
- **Positive scale** (``scale_breakers``): the modules that keep a net's hidden units from handing a
  positive scale to the next weight layer.

Nets mark what the walk needs with class attributes: ``chain_order`` (children in forward order),
``chain_shortcut`` (output = input + body), ``chain_gru`` (reads like ``nn.GRU``),
``chain_pass_through`` (no weights, units unmixed). docs/chains.md states the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from torch import nn

from weightsim.errors import ChainError, ConfigError


# -- activations -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Activation:
    """An element-wise activation sigma and the symmetries of a hidden unit (incoming [w; b], outgoing
    a, contributing a sigma(w.x + b)) that it allows:

    odd: sigma(-z) = -sigma(z): [w; b] -> -[w; b] with a -> -a keeps the function.
    positive_homogeneous: sigma(c z) = c sigma(z) for c > 0: [w; b] -> c [w; b] with a -> a / c keeps it.
    even_linear: sigma(-z) = sigma(z) - z: [w; b] -> -[w; b] keeping a changes the function by the
        linear term a (w.x + b) only (Expand-and-Cluster's "even-linear" class).
    defaults: constructor arguments a module must hold to count as this activation.
    """

    module: type[nn.Module]
    odd: bool = False
    positive_homogeneous: bool = False
    even_linear: bool = False
    defaults: tuple[tuple[str, object], ...] = ()

    def build(self) -> nn.Module:
        return self.module()

    def matches(self, m: nn.Module) -> bool:
        """Is ``m`` this activation (its exact class, with the default arguments)?"""
        return type(m) is self.module and all(getattr(m, k) == v for k, v in self.defaults)

    @property
    def sign_class(self) -> str | None:
        """Expand-and-Cluster's class: "odd", "relu" (even-linear and positively homogeneous),
        "even_linear", or None (no sign symmetry: not covered)."""
        if self.odd:
            return "odd"
        if self.even_linear:
            return "relu" if self.positive_homogeneous else "even_linear"
        return None


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(nn.Tanh, odd=True),
    "relu": Activation(nn.ReLU, positive_homogeneous=True, even_linear=True),
    "leaky_relu": Activation(nn.LeakyReLU, positive_homogeneous=True),  # sigma(-z) = sigma(z) - (1 + slope) z
    "softplus": Activation(nn.Softplus, even_linear=True, defaults=(("beta", 1), ("threshold", 20))),
    "gelu": Activation(nn.GELU, even_linear=True, defaults=(("approximate", "none"),)),
    "silu": Activation(nn.SiLU, even_linear=True),
}


def activation_name(m: nn.Module, among: dict[str, Activation] = ACTIVATIONS) -> str | None:
    """The registered name of activation module ``m`` (None: not one of ``among``)."""
    return next((name for name, a in among.items() if a.matches(m)), None)


# -- module kinds ------------------------------------------------------------------------------------
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# act on each unit (channel) alone and hold no weights: the chain walk passes them, the stacked
# population layout (zoo/stacked.py) runs them. Softplus and SiLU (registered for recover's teachers)
# are not among them: the chain walk refuses them and their students run under vmap.
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.Identity)
_MOVE = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
         nn.AdaptiveMaxPool2d)  # move or select values without mixing units, f(a x) = a f(x) for a > 0
# modules that act per unit / per channel, or move data without mixing units: no chain factor
PASS_THROUGH = ELEMENTWISE + _MOVE
# f(a x) = a f(x) per channel for a > 0: a positive channel scale passes them on
POSITIVELY_HOMOGENEOUS = tuple(a.module for a in ACTIVATIONS.values() if a.positive_homogeneous) + \
    (nn.Identity,) + _MOVE


def activation(name: str) -> nn.Module:
    """A fresh module of the activation ``name`` for an arch (arch.activation): one the chain walk and
    the stacked layout know (``ELEMENTWISE``)."""
    usable = [n for n, a in ACTIVATIONS.items() if a.module in ELEMENTWISE]
    if name not in usable:
        raise ConfigError(f"unknown arch.activation '{name}': choose from {', '.join(usable)}")
    return ACTIVATIONS[name].build()


# -- the walk: a net's weight layers in chain order -------------------------------------------------
GATES = ("r", "z", "n")  # torch's gate order in weight_ih / weight_hh
N_GATE = GATES.index("n")  # the candidate gate: its units are the hidden state's


@dataclass(frozen=True)
class Block:
    """One kernel of a weight layer, read from the parameter dict.

    gate: for GRU weights, which third of the rows (r, z, n = 0, 1, 2); None: the whole weight.
    hh_weight / hh_bias / hh_gate: GRU one-step recurrent path, the block is W_hh[hh_gate] W_ih[gate]
        (torch layout; input -> candidate n -> hidden state -> gate hh_gate).
    spatial: (s, s) when a Linear reads a flattened c x s x s map: its weight is a c x s x s kernel.
    continues: the block's columns transform like the layer's output (what the next layer reads), so
        chain parts ending in it are continued into the next layer; False: terminal (GRU r, z gates).
    """

    weight: str
    bias: str | None = None
    gate: int | None = None
    hh_weight: str | None = None
    hh_bias: str | None = None
    hh_gate: int | None = None
    spatial: tuple[int, int] | None = None
    continues: bool = True


@dataclass(frozen=True)
class BNRef:
    """A BatchNorm acting on the units of the previous weight layer."""

    module: str
    weight: str | None
    bias: str | None
    running_mean: str | None
    running_var: str | None
    eps: float


@dataclass(frozen=True)
class ChainLayer:
    """One weight layer of the chain: its blocks, sizes and the BatchNorms around it.

    bn_before: every BN between the previous weight layer and this one (bn="fold").
    bn_after: the last BN between this layer and the next one, whose gamma (and beta) bn="invariant"
        folds in; None: no BN.
    bn_absorbs: a BN is reached from this layer through positively homogeneous modules only, so it
        absorbs a positive per-channel scale of this layer's output (bn="invariant" removes it).
    """

    module: str
    blocks: tuple[Block, ...]
    c_in: int
    c_out: int
    kernel: tuple[int, int]
    bn_before: tuple[BNRef, ...] = ()
    raw: tuple[str, ...] = ()  # weight tensors of the raw baseline of this layer
    kind: str = "linear"
    bn_after: BNRef | None = None
    bn_absorbs: bool = False


@dataclass
class _Walk:
    layers: list[ChainLayer] = field(default_factory=list)
    pending_bn: list[BNRef] = field(default_factory=list)
    homogeneous: bool = False  # the last layer's output reached here through positively homogeneous modules


def _bn_ref(name: str, m: nn.Module) -> BNRef:
    p = f"{name}." if name else ""
    return BNRef(name, p + "weight" if m.weight is not None else None, p + "bias" if m.bias is not None else None,
                 p + "running_mean" if m.running_mean is not None else None,
                 p + "running_var" if m.running_var is not None else None, float(m.eps))


def _add(walk: _Walk, layer: ChainLayer) -> None:
    if walk.layers and walk.layers[-1].c_out != layer.c_in:
        prev = walk.layers[-1]
        raise ChainError(f"module '{layer.module}' takes {layer.c_in} units but the previous weight layer "
                         f"'{prev.module}' gives {prev.c_out}: not a chain")
    walk.layers.append(replace(layer, bn_before=tuple(walk.pending_bn)))
    walk.pending_bn = []
    walk.homogeneous = layer.kind != "gru"  # a GRU's output is tanh / gate mixed: nothing to absorb


def is_gru(m: nn.Module) -> bool:
    return isinstance(m, nn.GRU) or getattr(m, "chain_gru", False)


def _visit(name: str, m: nn.Module, walk: _Walk) -> None:
    p = f"{name}." if name else ""
    if isinstance(m, nn.Sequential):
        for child_name, child in m.named_children():
            _visit(p + child_name, child, walk)
    elif hasattr(m, "chain_order"):  # a net that names its children in forward order (e.g. Residual)
        for child_name in m.chain_order:
            _visit(p + child_name, getattr(m, child_name), walk)
        if getattr(m, "chain_shortcut", False):  # output = input + body(input): a scale of body's
            walk.homogeneous = False              # last layer no longer reaches a later BN alone
    elif isinstance(m, nn.Linear):
        prev = walk.layers[-1] if walk.layers else None
        spatial, c_in, kind = None, m.in_features, "linear"
        if prev is not None and prev.kind == "conv":
            c = prev.c_out
            s = math.isqrt(m.in_features // c) if m.in_features % c == 0 else 0
            if s * s * c != m.in_features:
                raise ChainError(f"module '{name}' (Linear with {m.in_features} inputs) after a conv with {c} "
                                 f"channels: {m.in_features} is not {c} x s x s for a square s")
            spatial, c_in, kind = (s, s), c, "fc_after_conv"
        _add(walk, ChainLayer(name, (Block(p + "weight", p + "bias" if m.bias is not None else None,
                                           spatial=spatial),), c_in, m.out_features,
                              spatial or (1, 1), raw=(p + "weight",), kind=kind))
    elif isinstance(m, nn.Conv2d):
        if m.groups != 1:
            raise ChainError(f"module '{name}' (Conv2d with groups={m.groups}) is not supported by the chain rule")
        _add(walk, ChainLayer(name, (Block(p + "weight", p + "bias" if m.bias is not None else None),),
                              m.in_channels, m.out_channels, tuple(m.kernel_size), raw=(p + "weight",),
                              kind="conv"))
    elif is_gru(m):
        if m.bidirectional or getattr(m, "proj_size", 0):
            raise ChainError(f"module '{name}' (bidirectional / projected GRU) is not supported by the chain rule")
        for layer in range(m.num_layers):
            ih, hh = f"{p}weight_ih_l{layer}", f"{p}weight_hh_l{layer}"
            bih, bhh = (f"{p}bias_ih_l{layer}", f"{p}bias_hh_l{layer}") if m.bias else (None, None)
            # GRU layer: input paths A_r, A_z, A_n and one-step recurrent paths A_n U_g (input -> n -> h -> g);
            # only n-gate / hidden-state columns (g = n) continue into the next layer (docs/chains.md)
            blocks = tuple(Block(ih, bih, gate=g, continues=g == N_GATE) for g in range(3)) + \
                tuple(Block(ih, bih, gate=N_GATE, hh_weight=hh, hh_bias=bhh, hh_gate=g, continues=g == N_GATE)
                      for g in range(3))
            c_in = m.input_size if layer == 0 else m.hidden_size
            _add(walk, ChainLayer(f"{name}[layer {layer}]", blocks, c_in, m.hidden_size, (1, 1),
                                  raw=(ih, hh), kind="gru"))
    elif isinstance(m, BATCHNORMS):
        if walk.layers:
            ref = _bn_ref(name, m)
            walk.pending_bn.append(ref)
            last = walk.layers[-1]  # BN(a x) = BN(x): it absorbs a positive channel scale reaching it
            walk.layers[-1] = replace(last, bn_after=ref, bn_absorbs=last.bn_absorbs or walk.homogeneous)
    elif isinstance(m, PASS_THROUGH) or getattr(m, "chain_pass_through", False):
        walk.homogeneous = walk.homogeneous and isinstance(m, POSITIVELY_HOMOGENEOUS)
    else:
        raise ChainError(f"module '{name or '<root>'}' ({type(m).__name__}) is not supported by the chain rule "
                         f"(supported: nn.Sequential of Linear / Conv2d / GRU with activations, BatchNorm, "
                         f"pooling, dropout and flatten between them, and residual blocks with chain_order)")


def chain_layers(model: nn.Module) -> list[ChainLayer]:
    """The chain's weight layers in forward order, with the BatchNorms around them."""
    if not isinstance(model, nn.Module):
        what = "a state dict" if isinstance(model, dict) else f"a {type(model).__name__}"
        raise ChainError(f"the chain functions take a model, got {what}: pass an nn.Module holding the weights "
                         f"(net.load_state_dict(state), then chain_features(net))")
    walk = _Walk()
    _visit("", model, walk)
    if not walk.layers:
        raise ChainError(f"the model ({type(model).__name__}) has no Linear, Conv2d or GRU layer to build chains from")
    return walk.layers


# -- tied units and the permutation groups ---------------------------------------------------------
def residual_ties(model: nn.Module, layers: list[ChainLayer]) -> list[tuple[int, int]]:
    """(i, j) layer index pairs whose outputs share one permutation: the last weight layer of a
    residual body and the weight layer that produced the stream it is added to (-1: the input)."""
    ties = []
    for name, m in model.named_modules():
        if not getattr(m, "chain_shortcut", False):
            continue
        prefix = f"{name}." if name else ""
        inside = [i for i, layer in enumerate(layers) if layer.module.startswith(prefix)]
        if inside:
            ties.append((inside[-1], inside[0] - 1))
    return ties


def _find(parent: dict, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def permutation_groups(model: nn.Module, layers: list[ChainLayer] | None = None) -> dict[str, list[int]]:
    """Group name -> indices of the hidden weight layers (of ``chain_layers``) whose output units one
    permutation moves, in forward order of each group's first layer (its name).

    One group per hidden layer, merged where residual ties join layers (union-find). Units tied to
    the input or to the output (a shortcut around the first or the last layer) belong to no group:
    no permutation moves them; neither does the output layer's.
    """
    layers = chain_layers(model) if layers is None else layers
    n = len(layers)
    parent = {i: i for i in range(-1, n)}
    for i, j in residual_ties(model, layers):
        parent[_find(parent, i)] = _find(parent, j)
    fixed = {_find(parent, -1), _find(parent, n - 1)}
    groups: dict[str, list[int]] = {}
    root_name: dict[int, str] = {}
    for i in range(n - 1):
        r = _find(parent, i)
        if r not in fixed:
            groups.setdefault(root_name.setdefault(r, layers[i].module), []).append(i)
    return groups


# -- positive scale ----------------------------------------------------------------------------------
def scale_breakers(model: nn.Module) -> list[str]:
    """'name (Type)' of every module that keeps a hidden unit's positive scale from passing to the next
    weight layer: BatchNorms (they absorb it), shortcuts and GRUs (they mix it), and any other leaf
    that is neither a Linear / Conv2d nor positively homogeneous. [] for ReLU MLPs and conv nets
    without BatchNorm or residual blocks, whose units' incoming norms can move to the next layer."""
    return [f"{name or '<root>'} ({type(m).__name__})" for name, m in model.named_modules()
            if isinstance(m, BATCHNORMS) or getattr(m, "chain_shortcut", False) or is_gru(m)
            or (not list(m.children()) and not isinstance(m, (nn.Linear, nn.Conv2d))
                and not isinstance(m, POSITIVELY_HOMOGENEOUS))]
