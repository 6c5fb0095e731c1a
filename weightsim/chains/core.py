"""Chain matrices C_l = W_1 W_2 ... W_l and their Grams G_l = C_l C_l^T (paper orientation).

Paper orientation: W_l in R^{n_{l-1} x n_l} is the transpose of ``nn.Linear.weight``. A hidden
permutation P of layer l maps C_l -> C_l P, so G_l is exactly invariant. Everything here works on
a parameter dict, so one net and a whole zoo (stacked parameters, via ``torch.func.vmap``) share
one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import vmap

from weightsim.errors import ChainError

# modules that act per unit (or not at all) and so are ignored by the chain, as in the paper
PASS_THROUGH = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.Identity,
                nn.Dropout, nn.Flatten, nn.BatchNorm1d)


@dataclass(frozen=True)
class ChainLayer:
    """One weight layer of a chain: where its weight (and bias) live in the parameter dict."""

    weight: str
    bias: str | None


def chain_layers(model: nn.Module) -> list[ChainLayer]:
    """The chain's weight layers in forward order, for an nn.Sequential of nn.Linear layers with
    element-wise modules (activations, dropout, flatten, BN) between them."""
    if not isinstance(model, nn.Sequential):
        raise ChainError(f"chain_matrices needs an nn.Sequential, got {type(model).__name__}")
    layers = []
    for name, m in model.named_children():
        if isinstance(m, nn.Linear):
            layers.append(ChainLayer(f"{name}.weight", f"{name}.bias" if m.bias is not None else None))
        elif not isinstance(m, PASS_THROUGH):
            raise ChainError(f"module '{name}' ({type(m).__name__}) is not supported by the chain rule")
    if not layers:
        raise ChainError("the model has no nn.Linear layer to build chains from")
    return layers


def chain_matrices_from_params(layers: list[ChainLayer], params: dict[str, Tensor],
                               bias: bool = False) -> list[Tensor]:
    """C_1..C_L for one net. C_l: (d, n_l), or (d+1, n_l+1) in homogeneous coordinates with bias."""
    chains, c = [], None
    for layer in layers:
        w = params[layer.weight].T  # W_l = weight^T: (n_{l-1}, n_l)
        if bias:  # W^_l = [[W_l, 0], [b_l, 1]] acting on [h, 1]
            b = params[layer.bias] if layer.bias else w.new_zeros(w.shape[1])
            top = torch.cat([w, w.new_zeros(w.shape[0], 1)], 1)
            bot = torch.cat([b, w.new_ones(1)])[None]
            w = torch.cat([top, bot], 0)
        c = w if c is None else c @ w  # C_l = C_{l-1} W_l
        chains.append(c)
    return chains


def gram_features(c: Tensor) -> Tensor:
    """Upper triangle (with diagonal) of G = C C^T, flattened: (d(d+1)/2,)."""
    g = c @ c.T  # G_l = C_l C_l^T
    i, j = torch.triu_indices(g.shape[0], g.shape[1], device=g.device)
    return g[i, j]


def chain_matrices(model: nn.Module, bias: bool = False) -> list[Tensor]:
    """C_1..C_L of ``model`` in paper orientation: rows = input coordinates, columns = layer-l units."""
    layers = chain_layers(model)
    params = {k: v.detach() for k, v in model.named_parameters()}
    return chain_matrices_from_params(layers, params, bias)


def chain_features(model: nn.Module, bias: bool = False) -> list[Tensor]:
    """Per chain, the upper triangle of G_l = C_l C_l^T as a 1-D tensor."""
    return [gram_features(c) for c in chain_matrices(model, bias)]


def raw_features(model: nn.Module) -> list[Tensor]:
    """The unnormalized baseline: layer l's weight flattened."""
    params = dict(model.named_parameters())
    return [params[layer.weight].detach().flatten() for layer in chain_layers(model)]


def _batches(stacked: dict[str, Tensor], batch_size: int):
    n = next(iter(stacked.values())).shape[0]
    for s in range(0, n, batch_size):
        yield {k: v[s:s + batch_size] for k, v in stacked.items()}


def zoo_chain_features(template: nn.Module, stacked: dict[str, Tensor], bias: bool = False,
                       batch_size: int = 256) -> list[Tensor]:
    """Chain features of a whole zoo. stacked: parameter name -> (N, *shape).
    Returns per chain an (N, D_l) tensor, equal to ``chain_features`` of each net."""
    layers = chain_layers(template)

    def one(params):
        return tuple(gram_features(c) for c in chain_matrices_from_params(layers, params, bias))

    parts = [vmap(one)(b) for b in _batches(stacked, batch_size)]
    return [torch.cat([p[l] for p in parts]) for l in range(len(layers))]


def zoo_raw_features(template: nn.Module, stacked: dict[str, Tensor]) -> list[Tensor]:
    """Raw baseline for a zoo: per layer an (N, numel) tensor of flattened weights."""
    return [stacked[layer.weight].flatten(1) for layer in chain_layers(template)]
