"""Weight matching: align the hidden units of one net to another's by permutation (Git Re-Basin,
Ainsworth et al. 2023), the distance left after it, and the linear-interpolation loss barrier.

Hidden units can be permuted without changing a net's function: a permutation P of layer l's units
permutes the rows of W_l and b_l (and every tensor of a BatchNorm on those units) and the input
columns of W_{l+1}. Weight matching looks for the permutations pi that bring net B closest to net A,

    max_pi  sum_tensors <theta_A, pi(theta_B)>   (equivalently  min_pi ||theta_A - pi(theta_B)||^2).

A *permutation group* is one such P together with every tensor axis it acts on (``PermSpec``). The
groups come from the same module walk as the chains (``chain_layers``): one group per hidden weight
layer; a residual block ``y = x + body(x)`` forces body's last layer to carry the permutation of
the stream x it is added to, so these groups are merged (union-find) into one permutation of the
residual stream. A Linear reading a flattened c x s x s conv map sees each channel as a block of
s*s input columns; a GRU layer's gate rows come in three blocks (r, z, n) that share the hidden
permutation, and its recurrent weight is permuted on both sides.

The problem is NP-hard; the solver is coordinate descent: start from the identity, visit the groups
in a seeded random order per sweep and, for group g with every other permutation held fixed, solve
the linear assignment

    pi_g = argmax_P  <S, P>,   S = sum_{axes of g} A_(axis first, flattened) @ B'_(same)^T

(B' = B with the other groups' current permutations applied), until a sweep gains no more than
1e-12. A group's new permutation is kept only when it raises the objective itself: for a group that
acts on two axes of one tensor (the conv inside a residual block of constant width reads and writes
the same stream; a GRU's recurrent weight) S is only a linearization, and a step could otherwise
lower the objective and cycle; for such a group the assignment is re-solved with its own new
permutation until it repeats, keeping the best. Every step taken raises the objective over a finite
set, so the descent stops. Coordinate descent can end in a local optimum (deep residual nets):
``restarts`` runs it from several visit orders and keeps the closest alignment.

Conventions: ``perms[g][i]`` is the unit of B placed at position i of A (aligned = B[perms]), so a
B made as ``A[q]`` gives ``perms = argsort(q)``. The distance is the L2 norm over every tensor of
the chain walk's layers (weights, biases, BatchNorm affine and running statistics), float64.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from weightsim.errors import WeightsimError
from weightsim.nets.spec import BATCHNORMS, ChainLayer, chain_layers, permutation_groups, scale_breakers

TOL_GAIN = 1e-12  # a step must raise the objective by more than this to be taken (and the sweeps to go on)
TOL_FUNCTION = 1e-8  # |f(aligned) - f(B)| / (1 + |f(B)|) allowed (float64 check)


class AlignError(WeightsimError):
    """Two nets that cannot be weight-matched, or a permutation that changed a net's function."""


@dataclass(frozen=True)
class AxisRef:
    """One tensor axis a permutation acts on, seen as (outer, n, inner): the n units are permuted,
    each a block of ``inner`` entries, repeated ``outer`` times (GRU gates: outer = 3; a Linear
    reading a c x s x s map: inner = s*s)."""

    tensor: str
    axis: int
    outer: int = 1
    inner: int = 1


@dataclass(frozen=True)
class PermSpec:
    """groups: group name -> the axes its permutation acts on; sizes: group -> units;
    layers: group -> the chain layers (module names) whose units it permutes;
    covered: every tensor the distance counts (the chain walk's weights, biases and BN tensors)."""

    groups: dict[str, tuple[AxisRef, ...]]
    sizes: dict[str, int]
    layers: dict[str, tuple[str, ...]]
    covered: tuple[str, ...]


@dataclass
class Alignment:
    """aligned: a copy of net_b with its hidden units permuted (same function, checked);
    perms: group -> (n_g,) int index array; distance / naive_distance: ||theta_A - pi(theta_B)||_2
    after / before alignment; sweeps: coordinate-descent sweeps run; layer_distances: the aligned
    distance split by chain layer (sum of squares = distance^2)."""

    aligned: nn.Module
    perms: dict[str, np.ndarray]
    distance: float
    naive_distance: float
    sweeps: int
    spec: PermSpec
    layer_distances: list[float]  # per chain layer, ||theta_A - pi(theta_B)||_2 over its tensors (layer_tensors)


# -- the permutation structure from the chain walk ----------------------------------------------------
def _own_axes(layer: ChainLayer) -> list[AxisRef]:
    """The axes of a layer's own tensors that carry its output units."""
    out = []
    for b in layer.blocks:
        outer = 3 if b.gate is not None else 1  # GRU: r, z, n rows share the hidden permutation
        out.append(AxisRef(b.weight, 0, outer))
        if b.bias:
            out.append(AxisRef(b.bias, 0, outer))
        if b.hh_weight:  # recurrent weight: gate rows and hidden-state columns are both this layer's units
            out += [AxisRef(b.hh_weight, 0, 3), AxisRef(b.hh_weight, 1)]
            if b.hh_bias:
                out.append(AxisRef(b.hh_bias, 0, 3))
    return out


def _input_axes(layer: ChainLayer) -> list[AxisRef]:
    """The input columns of a layer (blocks of s*s for a Linear after a conv)."""
    inner = layer.blocks[0].spatial[0] * layer.blocks[0].spatial[1] if layer.blocks[0].spatial else 1
    return [AxisRef(b.weight, 1, 1, inner) for b in layer.blocks]


def _bn_axes(layer: ChainLayer) -> list[AxisRef]:
    """Every tensor of the BatchNorms between this layer and the previous one (on its input units)."""
    return [AxisRef(t, 0) for bn in layer.bn_before
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var) if t]


def perm_spec(model: nn.Module) -> PermSpec:
    """The hidden permutation groups of ``model`` and the tensor axes each acts on.

    The groups and which layers each joins (residual ties) are the architecture spec's
    (``spec.permutation_groups``); this adds the tensor axes of each group's layers.
    """
    layers = chain_layers(model)
    groups: dict[str, list[AxisRef]] = {}
    sizes, members = {}, {}
    for g, idx in permutation_groups(model, layers).items():
        axes = groups.setdefault(g, [])
        for i in idx:
            axes += _own_axes(layers[i]) + _bn_axes(layers[i + 1]) + _input_axes(layers[i + 1])
            sizes[g] = layers[i].c_out
            members.setdefault(g, []).append(layers[i].module)
    covered = [t for tensors in layer_tensors(model) for t in tensors]
    return PermSpec({g: tuple(dict.fromkeys(a)) for g, a in groups.items()}, sizes,
                    {g: tuple(m) for g, m in members.items()}, tuple(dict.fromkeys(covered)))


def layer_tensors(model: nn.Module) -> list[tuple[str, ...]]:
    """Per chain layer, the tensors the distance counts: its weights and biases, the BatchNorms
    before it (and, for the last layer, the one after it)."""
    layers = chain_layers(model)
    out = []
    for layer in layers:
        ts = [a.tensor for a in _own_axes(layer) + _bn_axes(layer)] + [b.weight for b in layer.blocks]
        if layer is layers[-1] and layer.bn_after:
            bn = layer.bn_after
            ts += [t for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var) if t]
        out.append(tuple(dict.fromkeys(ts)))
    return out


# -- permuting tensors -----------------------------------------------------------------------------
def _unit_view(t: Tensor, a: AxisRef, n: int) -> Tensor:
    """t with axis ``a.axis`` split into (outer, n, inner): the units sit at dim a.axis + 1."""
    s = t.shape
    if s[a.axis] != a.outer * n * a.inner:
        raise AlignError(f"tensor '{a.tensor}' has {s[a.axis]} entries on axis {a.axis}, not "
                         f"{a.outer} x {n} x {a.inner}: the permutation spec does not fit this net")
    return t.reshape(*s[:a.axis], a.outer, n, a.inner, *s[a.axis + 1:])


def _permute_axis(t: Tensor, a: AxisRef, perm: Tensor) -> Tensor:
    """t with the units of axis ``a`` reordered: out[..., i, ...] = t[..., perm[i], ...]."""
    v = _unit_view(t, a, len(perm))
    return v.index_select(a.axis + 1, perm).reshape(t.shape)


def _units_first(t: Tensor, a: AxisRef, n: int) -> Tensor:
    """(n, rest): the units of axis ``a`` as rows, everything else flattened."""
    return _unit_view(t, a, n).movedim(a.axis + 1, 0).reshape(n, -1)


def apply_perms(params: dict[str, Tensor], spec: PermSpec, perms: dict[str, Tensor],
                skip: tuple[str, AxisRef] | None = None) -> dict[str, Tensor]:
    """pi(theta): every covered tensor with all group permutations applied (``skip``: one
    (group, axis) left unpermuted, for building the assignment matrix of that axis)."""
    out = dict(params)
    for g, axes in spec.groups.items():
        for a in axes:
            if skip is not None and skip == (g, a):
                continue
            out[a.tensor] = _permute_axis(out[a.tensor], a, perms[g])
    return out


# -- weight matching --------------------------------------------------------------------------------
def _params(net: nn.Module, spec: PermSpec) -> dict[str, Tensor]:
    sd = net.state_dict()
    return {k: sd[k].detach().to("cpu", torch.float64) for k in spec.covered}


def _load(net: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Copy ``tensors`` into net's state, in its dtypes (updating the state dict in place keeps its
    version metadata, without which BatchNorm asks for a step counter these nets do not have)."""
    sd = net.state_dict()
    for k, v in tensors.items():
        sd[k] = v.to(sd[k])  # its dtype and device
    net.load_state_dict(sd)


def _distance(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    """||theta_A - theta_B||_2 over the covered tensors."""
    return float(torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


def _check_same_arch(net_a: nn.Module, net_b: nn.Module) -> None:
    sa, sb = net_a.state_dict(), net_b.state_dict()
    if type(net_a) is not type(net_b) or list(sa) != list(sb):
        raise AlignError(f"weight matching needs two nets of one architecture, got {type(net_a).__name__} "
                         f"and {type(net_b).__name__} with different layers: pass nets of the same arch config")
    for k in sa:
        if sa[k].shape != sb[k].shape:
            raise AlignError(f"weight matching needs two nets of one architecture: '{k}' is "
                             f"{tuple(sa[k].shape)} in one net and {tuple(sb[k].shape)} in the other")


def _gain_matrix(pa: dict[str, Tensor], pb: dict[str, Tensor], spec: PermSpec, perms: dict[str, Tensor],
                 g: str) -> Tensor:
    """S = sum over g's axes of A_(units first) @ B'_(units first)^T, B' with all other axes permuted."""
    n = spec.sizes[g]
    s = torch.zeros(n, n, dtype=torch.float64)
    for a in spec.groups[g]:
        wb = apply_perms({a.tensor: pb[a.tensor]}, _only(spec, a.tensor), perms, skip=(g, a))[a.tensor]
        s += _units_first(pa[a.tensor], a, n) @ _units_first(wb, a, n).T
    return s


def _only(spec: PermSpec, tensor: str) -> PermSpec:
    """The spec restricted to the axes of one tensor."""
    groups = {g: tuple(a for a in axes if a.tensor == tensor) for g, axes in spec.groups.items()}
    return PermSpec(groups, spec.sizes, spec.layers, (tensor,))


def _objective(pa: dict[str, Tensor], pb: dict[str, Tensor], spec: PermSpec, perms: dict[str, Tensor],
               g: str) -> float:
    """sum over the tensors group g acts on of <theta_A, pi(theta_B)> (the rest does not depend on pi_g)."""
    tensors = dict.fromkeys(a.tensor for a in spec.groups[g])
    return sum(float((pa[t] * apply_perms({t: pb[t]}, _only(spec, t), perms)[t]).sum()) for t in tensors)


def _best_step(pa: dict[str, Tensor], pb: dict[str, Tensor], spec: PermSpec, perms: dict[str, Tensor],
               g: str, max_inner: int = 20) -> dict[str, Tensor]:
    """perms with pi_g replaced by the assignment solution of S if that raises the objective by more
    than TOL_GAIN, else perms itself. When g acts on two axes of one tensor, S depends on pi_g: re-solve
    with the new pi_g until it repeats (at most max_inner times), keeping the best by the objective."""
    from scipy.optimize import linear_sum_assignment  # (scipy.optimize: imported where weight matching runs,
    # not where the CLI checks the measures' settings)

    trial, best = perms, perms
    best_obj = _objective(pa, pb, spec, perms, g) + TOL_GAIN
    for _ in range(max_inner if _self_paired(spec, g) else 1):
        _, col = linear_sum_assignment(_gain_matrix(pa, pb, spec, trial, g).numpy(), maximize=True)
        col = torch.as_tensor(col, dtype=torch.long)
        if torch.equal(col, trial[g]):  # a fixed point of the assignment
            break
        trial = {**trial, g: col}
        obj = _objective(pa, pb, spec, trial, g)
        if obj > best_obj:
            best, best_obj = trial, obj
    return best


def _self_paired(spec: PermSpec, g: str) -> bool:
    """Does group g act on two axes of one tensor?"""
    tensors = [a.tensor for a in spec.groups[g]]
    return len(tensors) != len(set(tensors))


def probe_batch(model: nn.Module, n: int = 16, seed: int = 0) -> Tensor:
    """A random input batch for ``model`` (float N(0,1) for image/vector nets, character codes for GRUs)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, *getattr(model, "input_shape", (chain_layers(model)[0].c_in,)))
    onehot = [m for m in model.modules() if hasattr(m, "vocab") and getattr(m, "chain_pass_through", False)]
    if onehot:
        return torch.randint(0, onehot[0].vocab + 1, shape, generator=g)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _check_function(net_b: nn.Module, aligned: nn.Module, x: Tensor) -> None:
    """Raise AlignError unless the permuted copy computes net_b's outputs (eval mode, float64)."""
    fb, fa = (copy.deepcopy(n).cpu().double().eval() for n in (net_b, aligned))
    x = x.cpu().double() if torch.is_floating_point(x) else x.cpu()
    with torch.no_grad():
        yb, ya = fb(x), fa(x)
    err = float((ya - yb).abs().max() / (1 + yb.abs().max()))
    if not err <= TOL_FUNCTION:
        raise AlignError(f"the permuted copy of net B computes a different function (relative error {err:.2e}): "
                         f"the permutation spec of {type(net_b).__name__} is wrong for this architecture")


def _descend(pa: dict[str, Tensor], pb: dict[str, Tensor], spec: PermSpec, max_iter: int,
             seed: int) -> tuple[dict[str, Tensor], int]:
    """Coordinate descent from the identity, groups in a seeded random order per sweep: (perms, sweeps)."""
    perms = {g: torch.arange(n) for g, n in spec.sizes.items()}
    rng = np.random.default_rng(seed)
    names = list(spec.groups)
    sweeps = 0
    for sweeps in range(1, max_iter + 1):
        gained = False
        for k in rng.permutation(len(names)):
            g = names[k]
            step = _best_step(pa, pb, spec, perms, g)
            perms, gained = step, gained or step is not perms
        if not gained:
            break
    return perms, sweeps


def weight_matching(net_a: nn.Module, net_b: nn.Module, max_iter: int = 100, seed: int = 0,
                    restarts: int = 1, x: Tensor | None = None) -> Alignment:
    """Align net_b's hidden units to net_a's by coordinate descent over the permutation groups.

    restarts: descents with visit-order seeds seed, seed + 1, ...; the one of least distance is
    kept (1: the reference heuristic; more help deep residual nets, where one visit order can end in
    a local optimum). x: an input batch for the function check (default: ``probe_batch(net_b)``).
    Raises AlignError for nets of different architectures or if the permuted copy's outputs differ
    from net_b's.
    """
    _check_same_arch(net_a, net_b)
    if restarts < 1 or max_iter < 1:
        raise AlignError(f"weight matching needs restarts >= 1 and max_iter >= 1, got {restarts} and {max_iter}")
    spec = perm_spec(net_a)
    pa, pb = _params(net_a, spec), _params(net_b, spec)
    runs = [_descend(pa, pb, spec, max_iter, seed + r) for r in range(restarts)]
    perms, sweeps = min(runs, key=lambda run: _distance(pa, apply_perms(pb, spec, run[0])))
    pb_aligned = apply_perms(pb, spec, perms)
    aligned = copy.deepcopy(net_b)
    _load(aligned, pb_aligned)
    _check_function(net_b, aligned, probe_batch(net_b) if x is None else x)
    per_layer = [_distance({t: pa[t] for t in ts}, {t: pb_aligned[t] for t in ts}) for ts in layer_tensors(net_a)]
    return Alignment(aligned, {g: p.numpy() for g, p in perms.items()}, _distance(pa, pb_aligned),
                     _distance(pa, pb), sweeps, spec, per_layer)


def aligned_distances(nets: list[nn.Module], others: list[nn.Module] | None = None, **kw) -> np.ndarray:
    """(len(nets), len(others)) matrix of weight-matching distances ||theta_i - pi(theta_j)||_2 (others
    = nets: symmetric with a zero diagonal, each pair matched once, i < j). kw: ``weight_matching``'s."""
    same = others is None
    others = nets if same else others
    d = np.zeros((len(nets), len(others)))
    for i, a in enumerate(nets):
        for j, b in enumerate(others):
            if same and j <= i:
                d[i, j] = d[j, i]
                continue
            d[i, j] = weight_matching(a, b, **kw).distance
    return d


# -- ReLU scale canonicalization --------------------------------------------------------------------
def canonicalize_scale(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (same function) with every hidden unit's incoming [w, b] of norm 1 and the
    norm pushed into the next layer's input columns: relu(a z) = a relu(z) for a > 0, so this removes
    the per-unit positive rescaling that weight matching cannot see. For nets whose hidden layers
    reach the next weight layer through positively homogeneous modules only (ReLU MLPs and conv
    nets without BatchNorm or residual blocks)."""
    bad = scale_breakers(net)
    if bad:
        raise AlignError(f"canonicalize_scale needs hidden layers followed by ReLU-like (positively homogeneous) "
                         f"modules only; {', '.join(bad)} breaks that: match without canonicalize_scale")
    layers = chain_layers(net)
    out = copy.deepcopy(net)
    sd = {k: v.clone() for k, v in out.state_dict().items()}
    for layer, nxt in zip(layers[:-1], layers[1:]):
        w, b = layer.blocks[0].weight, layer.blocks[0].bias
        n = layer.c_out
        rows = [sd[w].reshape(n, -1)] + ([sd[b][:, None]] if b else [])
        norm = torch.linalg.norm(torch.cat(rows, 1), dim=1).clamp_min(1e-30)  # ||[w_i, b_i]||
        sd[w] = (sd[w].reshape(n, -1) / norm[:, None]).reshape(sd[w].shape)
        if b:
            sd[b] = sd[b] / norm
        a = _input_axes(nxt)[0]
        v = _unit_view(sd[a.tensor], a, n)
        shape = [1] * v.dim()
        shape[a.axis + 1] = n
        sd[a.tensor] = (v * norm.reshape(shape)).reshape(sd[a.tensor].shape)  # W_{l+1}[:, i] *= ||[w_i, b_i]||
    _load(out, sd)
    return out


# -- linear-interpolation loss barrier --------------------------------------------------------------
def reestimate_bn(net: nn.Module, x: Tensor) -> None:
    """Set every BatchNorm's running mean and variance to the statistics of its input on batch x
    (one train-mode forward with momentum 1; the weights are untouched; net is left in eval mode)."""
    bns = [m for m in net.modules() if isinstance(m, BATCHNORMS)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0  # running <- batch statistic
    with torch.no_grad():
        net.train()(x)
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    net.eval()


def interpolation_losses(net_a: nn.Module, net_b: nn.Module, x: Tensor, y: Tensor, n_lambda: int = 25,
                         bn_batch: Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lambdas, losses): cross-entropy on (x, y) of theta(lambda) = (1 - lambda) theta_A + lambda theta_B,
    eval mode, for n_lambda evenly spaced lambda in [0, 1]. Every floating tensor of the state dict is
    interpolated, BatchNorm running mean and variance included: by default the barrier is that of the
    interpolated weights and statistics as they are. The running statistics of an interpolated net
    are not those of its own activations, which inflates barriers of BN nets; ``bn_batch`` (inputs)
    re-estimates them on that batch at every lambda, the ends included."""
    _check_same_arch(net_a, net_b)
    sa, sb = net_a.state_dict(), net_b.state_dict()
    net = copy.deepcopy(net_a).double().eval()
    xs, bs = (t if t is None or not torch.is_floating_point(t) else t.to(torch.float64) for t in (x, bn_batch))
    lambdas = np.linspace(0.0, 1.0, n_lambda)
    losses = []
    for lam in lambdas:
        sd = {k: ((1 - lam) * v.double() + lam * sb[k].double()) if torch.is_floating_point(v) else v
              for k, v in sa.items()}  # theta(lambda) = (1 - lambda) theta_A + lambda theta_B
        _load(net, sd)
        if bs is not None:
            reestimate_bn(net, bs)
        with torch.no_grad():
            losses.append(float(nn.functional.cross_entropy(net(xs), y)))
    return lambdas, np.array(losses)


def loss_barrier(net_a: nn.Module, net_b_aligned: nn.Module, x: Tensor, y: Tensor, n_lambda: int = 25,
                 bn_batch: Tensor | None = None) -> float:
    """max_lambda  L(theta(lambda)) - ((1 - lambda) L(theta_A) + lambda L(theta_B)): the loss bump on the
    straight line between two nets above the line joining the end losses (>= 0; 0 for a convex path).
    bn_batch: see ``interpolation_losses``."""
    lambdas, losses = interpolation_losses(net_a, net_b_aligned, x, y, n_lambda, bn_batch)
    return float(np.max(losses - ((1 - lambdas) * losses[0] + lambdas * losses[-1])))
