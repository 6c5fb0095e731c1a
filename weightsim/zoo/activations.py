"""Activations of a zoo's nets on one probe batch, as the activation measures read them: per layer
a (samples, neurons) matrix per net, the same samples in the same order for every net.

A layer's neurons are its units (a conv layer's channels); its samples are the probe inputs, times
the positions of a conv map ((image, y, x), flattened) or the time steps of a sequence. The layers
are the net's hidden layers in forward order (``hidden_layers``: post-activation by default; with
``where="pre"`` the Linear / Conv output that feeds each activation) and the logits last.

Many nets run at once (``Zoo.forward``); the nets go in blocks whose activations fit ``budget_mb``
(the size of one net's activations is measured on the first net), so a large zoo streams. The
entry point is the zoo view's ``Zoo.activations``; ``zoo`` below is such a view (weightsim/zoo/view.py,
which imports this module, not the other way round).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import torch
from torch import Tensor, nn

from weightsim.errors import ConfigError
from weightsim.nets.spec import ELEMENTWISE

class NetsView(Protocol):
    """What the activations need of a zoo view (``Zoo``): its template net and a many-net forward."""

    template: nn.Module

    def forward(self, rows: list[dict], x: Tensor, capture: Iterable[str] = ()) -> tuple[Tensor, dict[str, Tensor]]:
        ...


LOGITS = "logits"  # the name of the output layer in every list of layers here
WHERE = ("post", "pre")


def hidden_layers(template: nn.Module) -> list[str]:
    """Names of the modules whose outputs are a net's hidden activations, in forward order: every
    activation module (ReLU, LeakyReLU, Tanh, ...) and every recurrent layer (its output sequence)."""
    return [name for name, m in template.named_modules()
            if (isinstance(m, ELEMENTWISE) and not isinstance(m, nn.Identity)) or getattr(m, "chain_gru", False)]


def layer_names(template: nn.Module, where: str = "post", only: list[str] | None = None,
                key: str = "measure.cka") -> list[str]:
    """The layers the activation measures compare: the hidden layers (post-activation, or with
    where="pre" the weight module feeding each activation) and ``LOGITS`` last; ``only``: those of
    them named (an unknown name is an error that lists the layers; ``key``: the settings it names)."""
    names = _all_layers(template, where)
    unknown = [n for n in (only or []) if n not in names]
    if unknown:
        raise ConfigError(f"no layer {unknown[0]!r} among the {where}-activation layers of {type(template).__name__}: "
                          f"set {key}.layers to some of {', '.join(names)} (or null for all)")
    return [n for n in names if n in only] if only else names


def _all_layers(template: nn.Module, where: str) -> list[str]:
    if where not in WHERE:
        raise ConfigError(f"unknown activation site where='{where}': choose post (after the activation "
                          f"function) or pre (the Linear / Conv output feeding it)")
    post = hidden_layers(template)
    if where == "post":
        return post + [LOGITS]
    leaves = [(n, m) for n, m in template.named_modules() if not list(m.children())]
    order = [n for n, _ in leaves]
    pre = []
    for name in post:
        i = order.index(name) if name in order else -1
        prev = leaves[i - 1] if i > 0 else None
        if prev is None or not isinstance(prev[1], (nn.Linear, nn.Conv2d)):
            raise ConfigError(f"layer {name!r} of {type(template).__name__} is not fed directly by a Linear or "
                              f"Conv2d: use where=post (pre-activations exist only for such layers)")
        pre.append(prev[0])
    return pre + [LOGITS]


def as_samples(t: Tensor) -> Tensor:
    """Per net, a (samples, neurons) matrix: (N, B, F) stays; (N, B, C, H, W) -> (N, B*H*W, C)
    (a channel is a neuron, every (image, position) a sample); (N, B, T, H) -> (N, B*T, H)."""
    if t.dim() == 3:
        return t
    if t.dim() == 5:
        n, b, c, h, w = t.shape
        return t.permute(0, 1, 3, 4, 2).reshape(n, b * h * w, c)
    if t.dim() == 4:
        n, b, s, h = t.shape
        return t.reshape(n, b * s, h)
    raise ConfigError(f"cannot read a layer output of shape {tuple(t.shape[1:])} as (samples, neurons)")


def _block(zoo: NetsView, rows: list[dict], x: Tensor, layers: list[str]) -> dict[str, Tensor]:
    hidden = [n for n in layers if n != LOGITS]
    logits, acts = zoo.forward(rows, x, capture=hidden)
    acts[LOGITS] = logits
    return {n: as_samples(acts[n]).float() for n in layers}


def iter_activations(zoo: NetsView, rows: list[dict], x: Tensor, layers: list[str] | None = None,
                     where: str = "post", budget_mb: float = 256.0,
                     key: str = "measure.cka") -> Iterator[tuple[list[dict], dict[str, Tensor]]]:
    """Blocks (rows_block, {layer: (n_block, samples, neurons) float32}) over ``rows`` in order, each
    block's activations within ``budget_mb`` (at least one net per block). x: (B, *input_shape)."""
    layers = layers or layer_names(zoo.template, where)
    if budget_mb <= 0:
        raise ConfigError(f"{key}.budget_mb={budget_mb} must be > 0")
    if not rows:
        return
    first = _block(zoo, rows[:1], x, layers)
    yield rows[:1], first
    per_net = sum(a[0].numel() * 4 for a in first.values())  # bytes of one net's float32 activations
    size = max(1, int(budget_mb * 2**20 // per_net))
    for s in range(1, len(rows), size):
        yield rows[s:s + size], _block(zoo, rows[s:s + size], x, layers)


def zoo_activations(zoo: NetsView, rows: list[dict], x: Tensor, layers: list[str] | None = None,
                    where: str = "post", budget_mb: float = 256.0, key: str = "measure.cka") -> dict[str, Tensor]:
    """{layer: (len(rows), samples, neurons)}: the nets ``rows`` of ``zoo`` on the probe x (B, *input_shape),
    computed in blocks within ``budget_mb`` (``iter_activations``) and joined."""
    parts = [acts for _, acts in iter_activations(zoo, rows, x, layers, where, budget_mb, key)]
    if not parts:
        raise ConfigError("no nets given to compute activations of")
    return {n: torch.cat([p[n] for p in parts]) for n in parts[0]}
