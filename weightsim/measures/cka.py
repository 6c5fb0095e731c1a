"""Centered kernel alignment (CKA; Kornblith et al., 2019) between the activations of two nets.

Shapes: a representation is x (n, p): n inputs (the same inputs in the same order for both nets),
p neurons. K = x x^T (or an RBF kernel of x) is its n x n Gram matrix, H = I - 11^T/n centres it.

  HSIC(K, L)  = tr(HKH HLH) / (n-1)^2                      (biased, Gretton et al. 2005)
  CKA(K, L)   = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))    in [0, 1]

For linear kernels with centred columns xc, yc: tr(HKH HLH) = ||yc^T xc||_F^2, so the *feature
form* costs O(n p^2) and the *Gram form* O(n^2 p); both give the same value (the cheaper one is
picked per representation).

Debiased CKA replaces every HSIC by the unbiased U-statistic of Song et al. (2012): with K~ = K with
its diagonal set to 0,

  HSIC_u(K, L) = [ <K~, L~> + (1^T K~ 1)(1^T L~ 1)/((n-1)(n-2)) - 2/(n-2) (K~ 1)^T (L~ 1) ] / (n(n-3))

It needs n >= 4 and can be negative (an independent pair gives values around 0, where the biased
form sits near p/n). For centred linear features it has the closed form
<K~, L~> = ||yc^T xc||_F^2 - d_x^T d_y, K~ 1 = -d_x, 1^T K~ 1 = -||xc||_F^2 (d_x: squared row norms).

Minibatch CKA (Nguyen et al., 2021): HSIC_u of each batch is an unbiased estimate of the population
HSIC, so averaging it over batches and normalising at the end gives CKA for probe sets that do not
fit in memory. Averaged over *all* size-k subsets of n inputs it equals the full-data HSIC_u
exactly (HSIC_u is a U-statistic of order 4).

CKA is invariant to permutations and orthogonal maps of the neurons and to isotropic scaling and
shifts of a representation; it is NOT invariant to rescaling single neurons (a function-preserving
symmetry of ReLU nets), which lowers it.

All arithmetic is float64; numpy arrays and torch tensors are accepted (torch tensors stay on their
device, so a GPU does the batched work); numpy arrays / floats are returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from weightsim.errors import ConfigError, DataError, warn

Array = np.ndarray | Tensor


def _as_float64(a: Array, name: str, ndim: int, device: torch.device | None = None) -> Tensor:
    """`a` as a float64 tensor with `ndim` dimensions (on `device` when given), finite."""
    t = a.detach() if isinstance(a, Tensor) else torch.as_tensor(np.ascontiguousarray(a, dtype=np.float64))
    t = t.to(dtype=torch.float64, device=device if device is not None else t.device)
    if t.ndim != ndim:
        shape = "(n_inputs, n_neurons)" if ndim == 2 else "(n_pairs, n_inputs, n_neurons)"
        raise DataError(f"{name} has shape {tuple(t.shape)}; CKA needs a {ndim}-D array {shape}")
    if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():  # the sum is the cheap test
        raise DataError(f"{name} contains NaN or inf; CKA needs finite activations")
    return t


def _same_inputs(x: Tensor, y: Tensor, who: str, debiased: bool, names: tuple[str, str] = ("x", "y")) -> int:
    """Number of inputs n shared by x and y (rows, axis -2); n >= 4 for the unbiased HSIC."""
    n, m = x.shape[-2], y.shape[-2]
    if n != m:
        raise DataError(f"{who}: {names[0]} has {n} inputs (rows) but {names[1]} has {m}; "
                        "both representations must come from the same inputs in the same order")
    if n < (4 if debiased else 2):
        raise DataError(f"{who}: {n} inputs are too few; "
                        f"{'debiased CKA needs at least 4' if debiased else 'CKA needs at least 2'}")
    return n


@dataclass
class _Rep:
    """HSIC statistics of one representation (leading batch dims allowed).

    kind "feature": m = centred features (..., n, p); kind "gram": m = centred Gram HKH (biased)
    or zero-diagonal Gram K~ (debiased), (..., n, n). d = squared row norms of the centred features
    (feature kind, debiased); r = K~ 1 (..., n) and s = 1^T K~ 1 (...) for the debiased statistic;
    constant = the representation does not vary over the inputs (CKA undefined)."""

    kind: str
    m: Tensor
    n: int
    debiased: bool
    constant: Tensor
    d: Tensor | None = None
    r: Tensor | None = None
    s: Tensor | None = None


def _is_constant(xc: Tensor, x: Tensor) -> Tensor:
    """True where the centred representation is zero up to rounding: ||xc||_F <= 1e-12 ||x||_F."""
    return xc.flatten(-2).norm(dim=-1) <= 1e-12 * x.flatten(-2).norm(dim=-1)


def _feature_rep(x: Tensor, debiased: bool, form: str = "auto") -> _Rep:
    """Linear-kernel statistics of x (..., n, p): feature form when it is cheaper (p < n) unless
    `form` says otherwise, else the Gram form of K = xc xc^T."""
    n, p = x.shape[-2], x.shape[-1]
    xc = x - x.mean(dim=-2, keepdim=True)  # centre each neuron over the inputs
    constant = _is_constant(xc, x)
    if form == "gram" or (form == "auto" and p >= n):
        return _gram_rep(xc @ xc.transpose(-1, -2), debiased, centred=True, constant=constant)
    if not debiased:
        return _Rep("feature", xc, n, False, constant)
    d = (xc * xc).sum(-1)  # diag(K): squared row norms
    return _Rep("feature", xc, n, True, constant, d=d, r=-d, s=-d.sum(-1))  # K~1 = -d, 1^T K~ 1 = -tr K


def _double_centre(k: Tensor) -> Tensor:
    """HKH: the Gram matrix of the centred representation, (..., n, n)."""
    return k - k.mean(-1, keepdim=True) - k.mean(-2, keepdim=True) + k.mean((-2, -1), keepdim=True)


def _gram_rep(k: Tensor, debiased: bool, centred: bool = False, constant: Tensor | None = None) -> _Rep:
    """Statistics of a Gram matrix k (..., n, n); `centred` says k = HKH already."""
    n = k.shape[-1]
    kc = k if centred else _double_centre(k)
    if constant is None:
        constant = _is_constant(kc, k)
    if not debiased:
        return _Rep("gram", kc, n, False, constant)
    kt = k - torch.diag_embed(torch.diagonal(k, dim1=-2, dim2=-1))  # K~: zero diagonal (no centring needed)
    r = kt.sum(-1)
    return _Rep("gram", kt, n, True, constant, r=r, s=r.sum(-1))


def _hsic(a: _Rep, b: _Rep) -> Tensor:
    """HSIC(a, b): biased tr(HKH HLH)/(n-1)^2, or the unbiased U-statistic, shape (...)."""
    n = a.n
    if a.kind == "feature" and b.kind == "feature":
        t = torch.einsum("...ni,...nj->...ij", b.m, a.m).square().sum((-2, -1))  # ||yc^T xc||_F^2
        if a.debiased:
            t = t - (a.d * b.d).sum(-1)  # <K~, L~> = <K, L> - diag(K).diag(L)
    elif a.kind == "gram" and b.kind == "gram":
        t = (a.m * b.m).sum((-2, -1))  # <K', L'>
    else:  # one Gram G, one feature xc: <G, xc xc^T> = sum((G xc) * xc); G has zero diagonal if debiased
        g, f = (a, b) if a.kind == "gram" else (b, a)
        t = ((g.m @ f.m) * f.m).sum((-2, -1))
    if not a.debiased:
        return t / (n - 1) ** 2
    t = t + a.s * b.s / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (a.r * b.r).sum(-1)
    return t / (n * (n - 3))


def _normalise(cross: Tensor, self_a: Tensor, self_b: Tensor, undefined: Tensor, debiased: bool,
               who: str) -> np.ndarray:
    """CKA = HSIC(a, b) / sqrt(HSIC(a, a) HSIC(b, b)); nan (with a warning) where undefined."""
    den = self_a * self_b
    bad = undefined | (den <= 0)
    out = torch.where(bad, torch.full_like(cross, float("nan")), cross / den.clamp_min(1e-300).sqrt())
    if bool(bad.any()):
        warn(f"{who}: {int(bad.sum())} CKA value(s) undefined, reported as nan: "
             + ("a representation does not vary over the inputs (a dead or constant layer)" if not debiased else
                "a representation is constant or its unbiased self-HSIC is <= 0 (too few inputs)"))
    return out.cpu().numpy()


def _check_form(form: str) -> None:
    if form not in ("auto", "feature", "gram"):
        raise ConfigError(f"CKA form={form!r} is not known; use 'auto', 'feature' or 'gram'")


def linear_cka(x: Array, y: Array, debiased: bool = False, form: str = "auto") -> float:
    """Linear CKA between x (n, p1) and y (n, p2) (rows: the same n inputs). `form` "auto" takes
    the feature form O(n p^2) when p < n, else the Gram form O(n^2 p); "feature"/"gram" force one.
    Biased: in [0, 1] up to rounding; debiased: may be slightly negative."""
    _check_form(form)
    x = _as_float64(x, "x", 2)
    y = _as_float64(y, "y", 2, x.device)
    _same_inputs(x, y, "linear_cka", debiased)
    a, b = _feature_rep(x, debiased, form), _feature_rep(y, debiased, form)
    return float(_normalise(_hsic(a, b), _hsic(a, a), _hsic(b, b), a.constant | b.constant, debiased, "linear_cka"))


def linear_cka_batched(xs: Array, ys: Array, debiased: bool = False, form: str = "auto") -> np.ndarray:
    """Linear CKA of P pairs at once: xs (P, n, p1), ys (P, n, p2) -> (P,), each equal to
    linear_cka(xs[i], ys[i]); one batched einsum per term (GPU if the tensors are on one)."""
    _check_form(form)
    xs = _as_float64(xs, "xs", 3)
    ys = _as_float64(ys, "ys", 3, xs.device)
    if xs.shape[0] != ys.shape[0]:
        raise DataError(f"linear_cka_batched: xs holds {xs.shape[0]} pairs but ys {ys.shape[0]}; give one y per x")
    _same_inputs(xs, ys, "linear_cka_batched", debiased)
    a, b = _feature_rep(xs, debiased, form), _feature_rep(ys, debiased, form)
    return _normalise(_hsic(a, b), _hsic(a, a), _hsic(b, b), a.constant | b.constant, debiased, "linear_cka_batched")


def _rbf_gram(x: Tensor, frac: float) -> Tensor:
    """K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2)), sigma^2 = frac^2 * median of all n x n squared
    distances (the zero diagonal included)."""
    x = x - x.mean(0)  # distances do not change; avoids cancellation in the expansion below
    sq = (x * x).sum(-1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(0.0)  # |x_i - x_j|^2
    flat, half = d2.flatten(), d2.numel() // 2
    lo, hi = flat.kthvalue(half).values, flat.kthvalue(half + 1).values  # the middle value(s)
    median = hi if flat.numel() % 2 else (lo + hi) / 2
    if median <= 0:
        raise DataError("kernel_cka: the median squared distance between inputs is 0 (most inputs give the same "
                        "activations), so the RBF bandwidth is undefined; use linear_cka for this layer")
    return torch.exp(-d2 / (2.0 * frac**2 * median))


def kernel_cka(x: Array, y: Array, kernel: str = "rbf", frac: float = 0.5, debiased: bool = False) -> float:
    """Kernel CKA between x (n, p1) and y (n, p2) in the Gram form, O(n^2 p) time, O(n^2) memory.
    kernel "rbf": bandwidth sigma = frac * sqrt(median squared distance) per representation;
    kernel "linear": K = x x^T (equals linear_cka)."""
    if kernel not in ("rbf", "linear"):
        raise ConfigError(f"kernel_cka: kernel={kernel!r} is not known; use 'rbf' or 'linear'")
    if not frac > 0:
        raise ConfigError(f"kernel_cka: frac={frac} must be > 0 "
                          "(the RBF bandwidth as a fraction of the median distance)")
    x = _as_float64(x, "x", 2)
    y = _as_float64(y, "y", 2, x.device)
    _same_inputs(x, y, "kernel_cka", debiased)
    if kernel == "linear":
        a, b = _feature_rep(x, debiased, "gram"), _feature_rep(y, debiased, "gram")
    else:
        a, b = _gram_rep(_rbf_gram(x, frac), debiased), _gram_rep(_rbf_gram(y, frac), debiased)
    return float(_normalise(_hsic(a, b), _hsic(a, a), _hsic(b, b), a.constant | b.constant, debiased, "kernel_cka"))


def _layer_hsics(acts_a: Sequence[Array], acts_b: Sequence[Array], debiased: bool, who: str):
    """HSIC of every layer pair (La, Lb) and of every layer with itself, each layer centred once."""
    if len(acts_a) == 0 or len(acts_b) == 0:
        raise DataError(f"{who}: give at least one layer for each net (lists of (n_inputs, n_neurons) arrays)")
    xa = [_as_float64(a, f"acts_a[{i}]", 2) for i, a in enumerate(acts_a)]
    dev = xa[0].device
    xb = [_as_float64(b, f"acts_b[{j}]", 2, dev) for j, b in enumerate(acts_b)]
    names = [f"acts_a[{i}]" for i in range(len(xa))] + [f"acts_b[{j}]" for j in range(len(xb))]
    for name, t in zip(names[1:], xa[1:] + xb):
        _same_inputs(xa[0], t, who, debiased, ("acts_a[0]", name))
    ra = [_feature_rep(t, debiased) for t in xa]
    rb = [_feature_rep(t, debiased) for t in xb]
    cross = torch.stack([torch.stack([_hsic(a, b) for b in rb]) for a in ra])
    self_a, self_b = torch.stack([_hsic(a, a) for a in ra]), torch.stack([_hsic(b, b) for b in rb])
    const_a, const_b = torch.stack([a.constant for a in ra]), torch.stack([b.constant for b in rb])
    return cross, self_a, self_b, const_a, const_b


def cka_matrix(acts_a: Sequence[Array], acts_b: Sequence[Array], debiased: bool = False) -> np.ndarray:
    """Linear CKA of every layer of net A (acts_a: La arrays (n, p_i)) against every layer of net B
    (acts_b: Lb arrays (n, q_j)) -> (La, Lb). Each layer is centred (and its self-HSIC computed)
    once; entry (i, j) equals linear_cka(acts_a[i], acts_b[j], debiased)."""
    cross, self_a, self_b, const_a, const_b = _layer_hsics(acts_a, acts_b, debiased, "cka_matrix")
    return _normalise(cross, self_a[:, None], self_b[None, :], const_a[:, None] | const_b[None, :], debiased,
                      "cka_matrix")


class MinibatchCKA:
    """Linear CKA over a probe set streamed in batches (Nguyen et al., 2021): the unbiased HSIC of
    each layer pair and of each layer with itself is averaged over batches (each batch weighted
    equally), then normalised, CKA_ij = mean HSIC_u(a_i, b_j) / sqrt(mean HSIC_u(a_i, a_i) mean HSIC_u(b_j, b_j)).

    Use batches of one fixed size k >= 4 (a smaller last batch is accepted but weighs as much as a
    full one). Usage: `m = MinibatchCKA(La, Lb); for ...: m.update(acts_a, acts_b); m.compute()`."""

    def __init__(self, n_layers_a: int, n_layers_b: int):
        if n_layers_a < 1 or n_layers_b < 1:
            raise ConfigError(f"MinibatchCKA needs at least one layer per net, got {n_layers_a} and {n_layers_b}")
        self.shape = (n_layers_a, n_layers_b)
        self.cross = np.zeros(self.shape)
        self.self_a, self.self_b = np.zeros(n_layers_a), np.zeros(n_layers_b)
        self.constant_a, self.constant_b = np.ones(n_layers_a, bool), np.ones(n_layers_b, bool)
        self.batches = 0

    def update(self, acts_a: Sequence[Array], acts_b: Sequence[Array]) -> "MinibatchCKA":
        """Add one batch: acts_a La arrays (k, p_i), acts_b Lb arrays (k, q_j), the same k inputs."""
        if (len(acts_a), len(acts_b)) != self.shape:
            raise DataError(f"MinibatchCKA.update got {len(acts_a)} and {len(acts_b)} layers, "
                            f"but was built for {self.shape[0]} and {self.shape[1]}")
        cross, self_a, self_b, const_a, const_b = _layer_hsics(acts_a, acts_b, True, "MinibatchCKA.update")
        self.cross += cross.cpu().numpy()
        self.self_a += self_a.cpu().numpy()
        self.self_b += self_b.cpu().numpy()
        self.constant_a &= const_a.cpu().numpy()  # constant over the whole set: constant in every batch
        self.constant_b &= const_b.cpu().numpy()
        self.batches += 1
        return self

    def compute(self) -> np.ndarray:
        """(La, Lb) minibatch CKA from the batches seen so far."""
        if self.batches == 0:
            raise DataError("MinibatchCKA.compute called before any update; feed batches with .update(acts_a, acts_b)")
        cross, self_a, self_b = (torch.as_tensor(v / self.batches) for v in (self.cross, self.self_a, self.self_b))
        undefined = torch.as_tensor(self.constant_a[:, None] | self.constant_b[None, :])
        return _normalise(cross, self_a[:, None], self_b[None, :], undefined, True, "MinibatchCKA")
