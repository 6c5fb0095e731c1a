"""Chain matrices and chain Grams for MLPs, conv nets, residual nets and GRUs (docs/chains.md).

Paper orientation: layer l maps n_{l-1} units to n_l units with W_l in R^{n_{l-1} x n_l} (the
transpose of ``nn.Linear.weight``); C_l = W_1 ... W_l; G_l = C_l C_l^T. A hidden permutation P of
layer l acts on the columns only (C_l -> C_l P), so G_l is exactly invariant.

One mechanism covers every architecture: each weight layer is a list of *blocks*, each block a
kernel K in R^{c_out x c_in x kh x kw} (torch layout). ``nn.Linear`` is a 1 x 1 kernel, an
``nn.Linear`` after a conv stack is a kernel of size s x s over the c x s x s map, a GRU layer is
six blocks (below). With C_0 = I (the input coordinates) the paper's reshape rule is

    R_l = K_l as c_{l-1} x (kh kw c_l),   C_l = reshape(C_{l-1} R_l, (rows(C_{l-1}) kh kw, c_l))

(for a 1 x 1 kernel simply C_l = C_{l-1} W_l). With several blocks the chain keeps the products
side by side: C_l = [C_{l-1}^(a) R_l^(b)] for every *continuing* part a of chain l-1 and every
block b of layer l; a (signed) permutation of layer l acts on the columns of each part, so
G_l = C_l C_l^T = sum_parts C C^T stays invariant. A part continues into layer l+1 only when its
columns transform like the layer's output (GRU: the candidate / hidden-state paths, not the gates).

BatchNorm (``bn="invariant"``): when layer l's output reaches a BN through positively homogeneous
modules only, the BN absorbs a positive per-channel scale of layer l; the walk scales every column
of C_l to norm 1 (removing it). Then the BN's gamma (and beta, with bias) is folded in before layer
l+1, which also removes the sign a tanh -> BN layer can hand to gamma.

The walk that reads a net's weight layers in this order (``chain_layers``, with the BatchNorms around
them) is the architecture spec's (nets/spec.py); this module turns its layers into chains.

Everything works on a parameter dict (``name -> tensor``), so one net and a whole zoo (stacked
parameters under ``torch.func.vmap``) share one code path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import vmap

from weightsim.chains.options import ChainOptions
from weightsim.errors import ChainError
# the walk (a net's weight layers in chain order, nets/spec.py); chain_layers is imported from here too
from weightsim.nets.spec import BNRef, Block, ChainLayer, chain_layers


# -- from parameters to kernels ----------------------------------------------------------------------
def _gate(t: Tensor, g: int | None) -> Tensor:
    if g is None:
        return t
    h = t.shape[0] // 3
    return t[g * h:(g + 1) * h]


def block_kernel(block: Block, params: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
    """K: (c_out, c_in, kh, kw) and bias: (c_out,) or None, in torch layout."""
    w = _gate(params[block.weight], block.gate)
    b = _gate(params[block.bias], block.gate) if block.bias else None
    if block.hh_weight is not None:
        # one recurrent step after the input path: paper orientation A_n U_g = W_ih[n]^T W_hh[g]^T
        u = _gate(params[block.hh_weight], block.hh_gate)  # (H, H)
        ub = _gate(params[block.hh_bias], block.hh_gate) if block.hh_bias else None
        b = None if b is None and ub is None else \
            (u @ b if b is not None else 0) + (ub if ub is not None else 0)
        w = u @ w  # (H, c_in)
    if w.dim() == 2:
        w = w.view(w.shape[0], -1, *block.spatial) if block.spatial else w[:, :, None, None]
    return w, b


def homogeneous(k: Tensor, b: Tensor | None) -> Tensor:
    """K^ in R^{(c_out+1) x (c_in+1) x kh x kw}: the extra input channel is the constant 1.

    The bias sits at the centre tap of the constant channel, the constant channel maps to itself
    there: for 1 x 1 kernels this is W^_l = [[W_l, 0], [b_l, 1]] acting on [h, 1]. Hidden
    permutations act as blockdiag(P, 1), so the Gram stays invariant.
    """
    c_out, c_in, kh, kw = k.shape
    ci, cj = (kh - 1) // 2, (kw - 1) // 2
    top = torch.cat([k, k.new_zeros(c_out, 1, kh, kw)], 1)
    bot = k.new_zeros(1, c_in + 1, kh, kw)
    if b is not None:
        top = top.clone()
        top[:, c_in, ci, cj] = b
    bot[0, c_in, ci, cj] = 1.0
    return torch.cat([top, bot], 0)


def _bn_affine(bn: BNRef, params: dict[str, Tensor], c: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """BN in eval form y = x d + t per unit: d = gamma / sqrt(var + eps), t = beta - mean d."""
    gamma = params[bn.weight] if bn.weight else like.new_ones(c)
    beta = params[bn.bias] if bn.bias else like.new_zeros(c)
    mean = params[bn.running_mean] if bn.running_mean else like.new_zeros(c)
    var = params[bn.running_var] if bn.running_var else like.new_ones(c)
    d = gamma / torch.sqrt(var + bn.eps)
    return d, beta - mean * d


# -- the chain walk -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChainPlan:
    """Per chain: input-side rows of the exact chain matrix, the remedy used, sketch sizes."""

    rows_exact: tuple[int, ...]
    remedy: tuple[str, ...]  # "exact" | "sketch" per chain
    feature_dim: tuple[int, ...]
    sketch_in: tuple[int | None, ...]  # per chain, the columns of S_l (None: no sketch at that step)

    def describe(self, opts: ChainOptions) -> list[dict]:
        return [{"chain": i + 1, "remedy": r, "rows_exact": d, "feature_dim": f,
                 **({"sketch_dim": opts.sketch_dim, "sketch_seed": opts.sketch_seed} if r == "sketch" else {}),
                 "bias": opts.bias, "bn": opts.bn, "scale": opts.scale}
                for i, (d, r, f) in enumerate(zip(self.rows_exact, self.remedy, self.feature_dim))]


def plan_chains(layers: list[ChainLayer], opts: ChainOptions) -> ChainPlan:
    """Decide per chain exact Gram or sketch: exact while the d x d float32 Gram fits budget_mb
    (and every earlier chain was exact), unless forced by ``opts.remedy``."""
    h = 1 if opts.bias else 0
    rows, sketched = layers[0].c_in + h, False
    rows_exact, remedy, dims, s_in = [], [], [], []
    for layer in layers:
        kh, kw = layer.kernel
        step_rows = rows * kh * kw  # rows of reshape(C_{l-1} R_l)
        d = (rows_exact[-1] if rows_exact else layer.c_in + h) * kh * kw
        fits = d * d * 4 <= opts.budget_mb * 2 ** 20
        use_sketch = opts.remedy == "sketch" or (opts.remedy == "auto" and (sketched or not fits))
        if use_sketch:
            s_in.append(step_rows)
            rows, sketched = opts.sketch_dim, True
        else:
            s_in.append(None)
            rows = step_rows
        rows_exact.append(d)
        remedy.append("sketch" if use_sketch else "exact")
        dims.append(rows * (rows + 1) // 2)
    return ChainPlan(tuple(rows_exact), tuple(remedy), tuple(dims), tuple(s_in))


def sketch_matrices(plan: ChainPlan, opts: ChainOptions, device=None, dtype=torch.float32) -> list[Tensor | None]:
    """The fixed seeded left maps S_l (m x rows), Gaussian N(0, 1/m); the same for every net."""
    out = []
    for i, n in enumerate(plan.sketch_in):
        if n is None:
            out.append(None)
            continue
        g = torch.Generator().manual_seed(opts.sketch_seed * 1_000_003 + i * 7919 + n)
        out.append((torch.randn(opts.sketch_dim, n, generator=g) / math.sqrt(opts.sketch_dim)).to(device, dtype))
    return out


def _unit_columns(c: Tensor, n: int) -> Tensor:
    """C_l diag(1 / ||C_l[:, j]||) for the n unit columns of every part (not the constant column)."""
    u = c[..., :n]
    u = u / torch.linalg.norm(u, dim=1, keepdim=True).clamp_min(1e-30)
    return torch.cat([u, c[..., n:]], -1)


def _fold_gamma(c: Tensor, bn: BNRef, params: dict[str, Tensor], n: int, bias: bool) -> Tensor:
    """C <- C [[diag(gamma), 0], [beta, 1]] (without bias C <- C diag(gamma)): BN's affine part."""
    gamma = params[bn.weight] if bn.weight else c.new_ones(n)
    u = c[..., :n] * gamma
    if bias and bn.bias:
        u = u + c[..., n:] * params[bn.bias]  # constant column times beta
    return torch.cat([u, c[..., n:]], -1)


def _walk_params(layers: list[ChainLayer], params: dict[str, Tensor], opts: ChainOptions,
                 sketches: list[Tensor | None]) -> list[Tensor]:
    """C_1..C_L (each (parts, rows, c_l[+1])) for one net's parameter dict.

    The walk starts from the first layer's kernels, never from C_0 = I: C_1 = reshape(R_1) (I R_1 = R_1),
    and a sketched first chain is S_1 reshape(R_1), the sketch applied to the weights directly.
    """
    h = 1 if opts.bias else 0
    first = params[layers[0].blocks[0].weight]
    c: Tensor | None = None  # C_{l-1}; None before the first layer (C_0 = I, never built)
    chains = []
    for layer, s in zip(layers, sketches):
        for bn in layer.bn_before if opts.bn == "fold" else ():  # empty for the first layer (_visit)
            d, t = _bn_affine(bn, params, layer.c_in, first)
            # C <- C [[D, 0], [t, 1]]: BN's per-unit affine map folded into the next layer
            scaled = c[..., :layer.c_in] * d
            if opts.bias:
                scaled = scaled + c[..., layer.c_in:] * t
            c = torch.cat([scaled, c[..., layer.c_in:]], -1)
        kernels = []
        for block in layer.blocks:
            k, b = block_kernel(block, params)
            kernels.append(homogeneous(k, b) if opts.bias else k)
        k = torch.stack(kernels)  # (B, c_out', c_in', kh, kw)
        nb, c_out, c_in, kh, kw = k.shape
        if c is not None and c.shape[-1] != c_in:
            raise ChainError(f"module '{layer.module}' takes {c_in} inputs, the chain gives {c.shape[-1]}")
        if c is None and c_in != layers[0].c_in + h:
            raise ChainError(f"module '{layer.module}' takes {c_in} inputs, the chain gives {layers[0].c_in + h}")
        r = k.permute(0, 2, 3, 4, 1).reshape(nb, c_in, kh * kw * c_out)  # R_l: c_{l-1} x (kh kw c_l)
        if c is None:  # C_1 = reshape(I R_1) = reshape(R_1): rows (c_0, tap), one part per block
            p, c = 1, r.reshape(nb, c_in * kh * kw, c_out)
        else:
            p, rows = c.shape[0], c.shape[1]
            c = torch.einsum("prc,bck->pbrk", c, r)  # C_{l-1} R_l, every part with every block
            c = c.reshape(p * nb, rows * kh * kw, c_out)  # reshape to (rows kh kw, c_l)
        if s is not None:
            c = s @ c  # C^_l = S_l reshape(C^_{l-1} R_l): a fixed left map, invariance stays exact
        invariant = opts.bn == "invariant"
        if invariant and layer.bn_absorbs:
            c = _unit_columns(c, layer.c_out)  # C_l diag(1/||C_l[:, j]||): the BN-absorbed scale removed
        chains.append(c)
        keep = [i for i, b in enumerate(layer.blocks) if b.continues]
        if len(keep) < nb:  # only parts whose columns transform like the layer's output continue
            c = c.view(p, nb, *c.shape[1:])[:, keep].reshape(p * len(keep), *c.shape[1:])
        if invariant and layer.bn_after is not None:
            c = _fold_gamma(c, layer.bn_after, params, layer.c_out, opts.bias)
    return chains


def _gram_features(c: Tensor, scale: str) -> Tensor:
    """Upper triangle (with diagonal) of G = sum_parts C C^T (= C C^T of the side-by-side C)."""
    if scale == "unit":  # every column (unit) of C_l to norm 1: also invariant to per-unit scale of layer l
        c = c / torch.linalg.norm(c, dim=1, keepdim=True).clamp_min(1e-30)
    g = torch.einsum("prc,psc->rs", c, c)  # G_l = C_l C_l^T
    if scale == "fro":
        g = g / torch.linalg.norm(g).clamp_min(1e-30)  # G_l / ||G_l||_F
    i, j = torch.triu_indices(g.shape[0], g.shape[1], device=g.device)
    return g[i, j]


def gram_features(c: Tensor, scale: str = "none") -> Tensor:
    """Upper triangle of G = C C^T for one chain matrix C: (d, n) -> (d(d+1)/2,)."""
    return _gram_features(c[None] if c.dim() == 2 else c, scale)


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {**{k: v.detach() for k, v in model.named_parameters()},
            **{k: v.detach() for k, v in model.named_buffers()}}


def _dtype(layers: list[ChainLayer], params: dict[str, Tensor]) -> torch.dtype:
    return params[layers[0].blocks[0].weight].dtype


def _opts(opts: ChainOptions | None, kw: dict) -> ChainOptions:
    if opts is not None and kw:
        raise TypeError("pass either a ChainOptions or keyword options, not both")
    return opts or ChainOptions(**kw)


def _model_chains(model: nn.Module, opts: ChainOptions) -> list[Tensor]:
    """C_1..C_L of one model, each (parts, rows, c_l[+1]) as ``_walk_params`` gives them."""
    layers = chain_layers(model)
    state = _state(model)
    sketches = sketch_matrices(plan_chains(layers, opts), opts, dtype=_dtype(layers, state))
    return _walk_params(layers, state, opts, sketches)


def chain_matrices(model: nn.Module, opts: ChainOptions | None = None, **kw) -> list[Tensor]:
    """C_1..C_L of ``model`` in paper orientation: (rows, n_l), rows = input-side coordinates
    (sketched rows where the plan sketches), columns = layer-l units (GRU: all parts side by side).
    Keyword options as in ChainOptions, e.g. ``chain_matrices(net, bias=True)``."""
    return [c.permute(1, 0, 2).reshape(c.shape[1], -1) for c in _model_chains(model, _opts(opts, kw))]


def chain_features(model: nn.Module, opts: ChainOptions | None = None, **kw) -> list[Tensor]:
    """Per chain, the upper triangle of G_l = C_l C_l^T (optionally / ||G_l||_F) as a 1-D tensor."""
    opts = _opts(opts, kw)
    return [_gram_features(c, opts.scale) for c in _model_chains(model, opts)]


def describe_chains(model: nn.Module, opts: ChainOptions | None = None, **kw) -> list[dict]:
    """Per chain: exact rows d_l, remedy (exact / sketch), feature dimension, the options, the last
    layer, the chain's parts and whether its columns are scaled to norm 1 for a BN-absorbed scale."""
    opts = _opts(opts, kw)
    layers = chain_layers(model)
    desc = plan_chains(layers, opts).describe(opts)
    for d, layer, parts in zip(desc, layers, chain_parts(layers)):
        d["last_layer"] = layer.module
        d["parts"] = parts
        d["bn_unit_columns"] = opts.bn == "invariant" and layer.bn_absorbs
    return desc


def chain_parts(layers: list[ChainLayer]) -> list[int]:
    """Per chain, the number of parts C_{l-1}^(a) R_l^(b) side by side (1 except after a GRU)."""
    out, cont = [], 1
    for layer in layers:
        out.append(cont * len(layer.blocks))
        cont *= sum(b.continues for b in layer.blocks)
    return out


def raw_features(model: nn.Module) -> list[Tensor]:
    """The unnormalized baseline: layer l's weight tensor(s) flattened."""
    params = _state(model)
    return [torch.cat([params[n].flatten() for n in layer.raw]) for layer in chain_layers(model)]


def _batches(stacked: dict[str, Tensor], batch_size: int):
    n = next(iter(stacked.values())).shape[0]
    for s in range(0, n, batch_size):
        yield {k: v[s:s + batch_size] for k, v in stacked.items()}


def per_net_bytes(layers: list[ChainLayer], plan: ChainPlan) -> int:
    """Rough working memory of one net's chain walk (largest step + all features), float32."""
    peak = 0
    for layer, n_in, dim, parts in zip(layers, plan.sketch_in, plan.feature_dim, chain_parts(layers)):
        rows = n_in if n_in is not None else math.isqrt(2 * dim)
        peak = max(peak, parts * rows * (layer.c_out + 1) * 2 + 2 * rows * rows)
    return 4 * (peak + sum(plan.feature_dim))


def zoo_chain_features(template: nn.Module, stacked: dict[str, Tensor], opts: ChainOptions | None = None,
                       **kw) -> list[Tensor]:
    """Chain features of a whole zoo. stacked: parameter / buffer name -> (N, *shape).
    Returns per chain an (N, D_l) tensor, equal to ``chain_features`` of each net. Nets go through
    ``vmap`` in batches of at most ``batch_size`` and ``batch_budget_mb``."""
    opts = _opts(opts, kw)
    layers = chain_layers(template)
    plan = plan_chains(layers, opts)
    any_t = next(iter(stacked.values()))
    sketches = sketch_matrices(plan, opts, any_t.device, _dtype(layers, stacked))
    need = {b for layer in layers for blk in layer.blocks
            for b in (blk.weight, blk.bias, blk.hh_weight, blk.hh_bias) if b}
    if opts.bn == "fold":
        need |= {n for layer in layers for bn in layer.bn_before
                 for n in (bn.weight, bn.bias, bn.running_mean, bn.running_var) if n}
    elif opts.bn == "invariant":
        need |= {n for layer in layers if layer.bn_after for n in (layer.bn_after.weight, layer.bn_after.bias) if n}
    missing = need - set(stacked)
    if missing:
        raise ChainError(f"the zoo's weights lack {sorted(missing)[:3]}: not this architecture")
    stacked = {k: stacked[k] for k in need}
    batch = max(1, min(opts.batch_size, int(opts.batch_budget_mb * 2 ** 20 // per_net_bytes(layers, plan))))

    def one(params):
        return tuple(_gram_features(c, opts.scale) for c in _walk_params(layers, params, opts, sketches))

    parts = [vmap(one)(b) for b in _batches(stacked, batch)]
    return [torch.cat([p[i] for p in parts]) for i in range(len(layers))]


def zoo_raw_features(template: nn.Module, stacked: dict[str, Tensor]) -> list[Tensor]:
    """Raw baseline for a zoo: per layer an (N, numel) tensor of its flattened weight tensor(s) (a view
    of ``stacked`` where the layer has one weight tensor)."""
    flat = [[stacked[n].flatten(1) for n in layer.raw] for layer in chain_layers(template)]
    return [f[0] if len(f) == 1 else torch.cat(f, 1) for f in flat]
