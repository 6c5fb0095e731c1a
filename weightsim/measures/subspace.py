"""Neuron activation subspace match (Wang et al., NeurIPS 2018): maximum match and simple matches.

Two nets see the same d inputs. Neuron v's activation vector is z_v in R^d (a column of the
(d, m) activation matrix). For neuron sets X' of net A and Y' of net B, (X', Y') is an
eps-match when every neuron of one set lies close to the span of the other:

    dist(z_x, span{z_y : y in Y'}) <= eps ||z_x||  for all x in X',  and the same for y vs X'.

The union of two eps-matches is an eps-match, so there is one maximum match (X*, Y*). The
similarity of two layers is s(eps) = (|X*| + |Y*|) / (|X| + |Y|), where |X|, |Y| count every
neuron of the layer, dead (all-zero) ones included; s(eps) is non-decreasing in eps.

Maximum match by pruning: drop the zero vectors; then repeat a round, keep the x whose
relative residual onto span(Y) is <= eps, then keep the y whose relative residual onto span(X)
is <= eps, until a round removes nothing or a side is empty (then both are). It is exact: a
neuron that fails against a set fails against every subset of it, so no member of the maximum
match is ever pruned.

Fast path. Every residual depends on the activations only through inner products. One thin QR
of the stacked [A | B] = Q R (O(d m^2), m = m_a + m_b) gives coordinates R whose columns have the
same Gram matrix, so every projection afterwards works on r = min(d, m) rows and a round costs
O(m^3) whatever d is. ``method="gram"`` instead accumulates [A | B]^T [A | B] over row blocks
and uses an eigh factor (for d too large to hold a float64 copy; it squares the condition
number, so keep eps >= 1e-3 with it). Rank-deficient spans are cut at relative singular value
machine-eps * max(d, k), the cutoff a least-squares solve on the d x k system would use.

A simple match is a match that is not a union of strictly smaller matches. The v-minimal match
of a neuron v in X*: start from the maximum match, try deleting each other neuron, and keep a
deletion when v is still in the maximum match of what is left (then shrink to that maximum
match, so the result is always a match). A deletion refused once stays refused against every
smaller set (the maximum match is monotone in the candidate set), so one pass gives a match
containing v of which no proper sub-match contains v.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from weightsim.errors import ConfigError, DataError, warn

GRID = (0.15, 0.2, 0.25, 0.3, 0.5)  # the eps grid of the 2018 paper's experiments
_EPS64 = np.finfo(np.float64).eps


@dataclass(frozen=True)
class Match:
    """A match (X', Y'): ``ix``, ``iy`` sorted neuron indices of net A / net B; ``similarity``
    (|X'| + |Y'|) / (|X| + |Y|) with dead neurons counted; ``rounds`` pruning rounds taken."""

    ix: np.ndarray
    iy: np.ndarray
    similarity: float
    rounds: int
    eps: float


def _check_activations(shape: tuple, finite: bool, name: str) -> None:
    """One clear error for activations that are not a finite (n_inputs, n_neurons) matrix."""
    if len(shape) != 2:
        raise DataError(f"subspace match: activations {name} have shape {tuple(shape)}; pass a 2-D "
                        "(n_inputs, n_neurons) array (flatten conv positions into the input axis)")
    if not finite:
        raise DataError(f"subspace match: activations {name} contain NaN or inf; check the probe "
                        "batch and the net that produced them")


def _to_numpy(x, name: str) -> np.ndarray:
    """(d, m) float64 numpy copy of an array or tensor; one clear error otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    _check_activations(x.shape, x.ndim == 2 and bool(np.isfinite(x).all()), name)
    return x


def _finite_2d_tensor(x: torch.Tensor, name: str) -> torch.Tensor:
    x = x.detach().to(torch.float64)
    _check_activations(x.shape, x.ndim == 2 and bool(torch.isfinite(x).all()), name)
    return x


def _check_pair(a, b) -> None:
    if a.shape[0] != b.shape[0]:
        raise DataError(f"subspace match: activations have {a.shape[0]} and {b.shape[0]} inputs; "
                        "both nets must see the same probe inputs in the same order")


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not np.isfinite(eps) or eps < 0:
        raise ConfigError(f"subspace match: eps={eps} is not a relative distance; pass eps >= 0")
    return eps


def _residuals(z: np.ndarray, norms: np.ndarray, basis: np.ndarray, d: int, power: float = 1.0) -> np.ndarray:
    """Relative residuals ||z_j - P z_j|| / ||z_j|| of the columns of z (r, n) onto span(basis)
    (r, k); singular values below (eps64 * max(d, k))^power * s_max count as zero (power 1/2
    for coordinates from the Gram, whose rounding noise is the square root of eps64)."""
    if basis.shape[1] == 0:
        return np.ones(z.shape[1])
    u, s, _ = np.linalg.svd(basis, full_matrices=False)
    u = u[:, s > (_EPS64 * max(d, basis.shape[1])) ** power * s[0]]
    res = z - u @ (u.T @ z)  # (I - U U^T) z
    return np.linalg.norm(res, axis=0) / norms


class _Coords:
    """The live neurons of both nets in coordinates with the Gram matrix of their activations:
    za (r, na), zb (r, nb); ``live_a``/``live_b`` map columns back to neuron indices."""

    def __init__(self, za, zb, live_a, live_b, n_a: int, n_b: int, d: int, power: float = 1.0):
        self.za, self.zb, self.live_a, self.live_b = za, zb, live_a, live_b
        self.n_a, self.n_b, self.d, self.power = n_a, n_b, d, power
        self.norm_a = np.linalg.norm(za, axis=0)
        self.norm_b = np.linalg.norm(zb, axis=0)

    @classmethod
    def build(cls, a, b, zero_tol: float = 1e-16, method: str = "qr", block: int = 8192) -> "_Coords":
        """Factor [A | B] once (a, b: (d, m_a), (d, m_b) arrays or tensors)."""
        if method not in ("qr", "gram"):
            raise ConfigError(f"subspace match: method={method!r} is unknown; use 'qr' or 'gram'")
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and method == "qr":
            return cls._build_torch(a, b, zero_tol)
        if method == "gram":
            return cls._build_gram(a, b, zero_tol, block)
        a, b = _to_numpy(a, "a"), _to_numpy(b, "b")
        _check_pair(a, b)
        d, n_a, n_b = a.shape[0], a.shape[1], b.shape[1]
        live_a = np.flatnonzero(np.linalg.norm(a, axis=0) > zero_tol)
        live_b = np.flatnonzero(np.linalg.norm(b, axis=0) > zero_tol)
        z = np.linalg.qr(np.concatenate([a[:, live_a], b[:, live_b]], axis=1), mode="r")  # [A|B] = Q z
        return cls(z[:, :len(live_a)], z[:, len(live_a):], live_a, live_b, n_a, n_b, d)

    @classmethod
    def _build_gram(cls, a, b, zero_tol: float, block: int) -> "_Coords":
        """Gram [A|B]^T [A|B] accumulated in float64 over blocks of inputs (no full float64
        copy), factored by eigh: z = diag(sqrt(w)) V^T has z^T z = G."""
        a = a if isinstance(a, (np.ndarray, torch.Tensor)) else np.asarray(a, dtype=np.float64)
        b = b if isinstance(b, (np.ndarray, torch.Tensor)) else np.asarray(b, dtype=np.float64)
        for x, name in ((a, "a"), (b, "b")):
            if len(x.shape) != 2:
                _to_numpy(x, name)  # raises the shape error
        _check_pair(a, b)
        d, n_a = a.shape[0], a.shape[1]
        gram = np.zeros((n_a + b.shape[1],) * 2)
        for i in range(0, d, block):
            m = np.concatenate([_to_numpy(a[i:i + block], "a"), _to_numpy(b[i:i + block], "b")], axis=1)
            gram += m.T @ m
        norms = np.sqrt(np.clip(np.diag(gram), 0, None))
        live_a = np.flatnonzero(norms[:n_a] > zero_tol)
        live_b = np.flatnonzero(norms[n_a:] > zero_tol)
        keep = np.concatenate([live_a, n_a + live_b])
        w, v = np.linalg.eigh(gram[np.ix_(keep, keep)])
        z = np.sqrt(np.clip(w, 0, None))[:, None] * v.T
        return cls(z[:, :len(live_a)], z[:, len(live_a):], live_a, live_b, n_a, b.shape[1], d, power=0.5)

    @classmethod
    def _build_torch(cls, a: torch.Tensor, b: torch.Tensor, zero_tol: float) -> "_Coords":
        """The QR on the tensors' device (a GPU when they live there); the rounds run on the CPU."""
        a = _finite_2d_tensor(a, "a")
        b = _finite_2d_tensor(b, "b").to(a.device)
        _check_pair(a, b)
        live_a = torch.nonzero(torch.linalg.vector_norm(a, dim=0) > zero_tol).flatten()
        live_b = torch.nonzero(torch.linalg.vector_norm(b, dim=0) > zero_tol).flatten()
        _, r = torch.linalg.qr(torch.cat([a[:, live_a], b[:, live_b]], dim=1), mode="r")
        z = r.cpu().numpy()
        return cls(z[:, :len(live_a)], z[:, len(live_a):], live_a.cpu().numpy(), live_b.cpu().numpy(),
                   a.shape[1], b.shape[1], a.shape[0])

    def restrict(self, ja: np.ndarray, jb: np.ndarray) -> "_Coords":
        """The same neurons' coordinates on the columns ja, jb only (re-factored: fewer rows)."""
        z = np.linalg.qr(np.concatenate([self.za[:, ja], self.zb[:, jb]], axis=1), mode="r")
        return _Coords(z[:, :len(ja)], z[:, len(ja):], self.live_a[ja], self.live_b[jb],
                       self.n_a, self.n_b, self.d, self.power)

    def prune(self, eps: float, ja: np.ndarray | None = None, jb: np.ndarray | None = None):
        """Maximum match inside the columns ja, jb (default: all): (ja*, jb*, rounds)."""
        ja = np.arange(self.za.shape[1]) if ja is None else ja
        jb = np.arange(self.zb.shape[1]) if jb is None else jb
        rounds = 0
        while len(ja) and len(jb):
            rounds += 1
            keep_a = _residuals(self.za[:, ja], self.norm_a[ja], self.zb[:, jb], self.d, self.power) <= eps
            ja = ja[keep_a]
            if not len(ja):
                break
            keep_b = _residuals(self.zb[:, jb], self.norm_b[jb], self.za[:, ja], self.d, self.power) <= eps
            jb = jb[keep_b]
            if keep_a.all() and keep_b.all():
                break
        if not (len(ja) and len(jb)):  # one side empty: nothing of the other lies in its span
            ja, jb = ja[:0], jb[:0]
        return ja, jb, rounds

    def to_match(self, ja, jb, rounds: int, eps: float) -> Match:
        ix, iy = np.sort(self.live_a[ja]), np.sort(self.live_b[jb])
        return Match(ix, iy, (len(ix) + len(iy)) / (self.n_a + self.n_b), rounds, eps)

    def warn_size(self, eps: float) -> None:
        """Random activations match trivially once the neurons nearly fill the input space."""
        m = self.za.shape[1] + self.zb.shape[1]
        if m > (1 - eps ** 2) * self.d:
            warn(f"subspace match: {m} live neurons against d={self.d} inputs at eps={eps:g}: random "
                 f"activations already match at this size (a random vector keeps a residual of about "
                 f"sqrt(1 - k/d) onto k random directions); use more probe inputs or a smaller eps")


def max_match(a, b, eps: float, *, zero_tol: float = 1e-16, method: str = "qr") -> Match:
    """Maximum eps-match between the neurons of a (d, m_a) and b (d, m_b) (arrays or tensors)."""
    eps = _check_eps(eps)
    coords = _Coords.build(a, b, zero_tol, method)
    coords.warn_size(eps)
    return coords.to_match(*coords.prune(eps), eps)


def match_curve(a, b, eps: Sequence[float] = GRID, *, zero_tol: float = 1e-16,
                method: str = "qr") -> np.ndarray:
    """Similarity s(eps) for every eps of the grid, (len(eps),), from one factorization. The
    grid runs from the largest eps down, each match started from the previous one (the
    eps-match of a smaller eps lies inside the one of a larger eps)."""
    grid = [_check_eps(e) for e in eps]
    coords = _Coords.build(a, b, zero_tol, method)
    if not grid:
        return np.zeros(0)
    coords.warn_size(max(grid))
    sims = np.zeros(len(grid))
    ja, jb = None, None
    for i in np.argsort(grid)[::-1]:
        ja, jb, _ = coords.prune(grid[i], ja, jb)
        sims[i] = (len(ja) + len(jb)) / (coords.n_a + coords.n_b)
    return sims


def max_epsilon(a, b, *, zero_tol: float = 1e-16, method: str = "qr") -> float:
    """The largest relative residual of any live neuron onto the span of the other net's live
    neurons: every eps at or above it matches all live neurons (0 when a side has none)."""
    return _max_epsilon(_Coords.build(a, b, zero_tol, method))


def _max_epsilon(c: _Coords) -> float:
    if not (c.za.shape[1] and c.zb.shape[1]):
        return 0.0
    return float(max(_residuals(c.za, c.norm_a, c.zb, c.d, c.power).max(),
                     _residuals(c.zb, c.norm_b, c.za, c.d, c.power).max()))


def min_epsilon(a, b, min_size: int, tol: float = 1e-4, *, zero_tol: float = 1e-16,
                method: str = "qr") -> float:
    """The least eps (to within tol, by bisection) whose maximum match holds >= min_size neurons
    of each net."""
    c = _Coords.build(a, b, zero_tol, method)
    live = min(c.za.shape[1], c.zb.shape[1])
    if min_size > live:
        raise ConfigError(f"subspace match: min_size={min_size} but one net has only {live} live "
                          f"(non-zero) neurons; pass min_size <= {live}")
    if min_size <= 0:
        return 0.0
    lo, hi = 0.0, _max_epsilon(c)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        ja, jb, _ = c.prune(mid)
        lo, hi = (lo, mid) if min(len(ja), len(jb)) >= min_size else (mid, hi)
    return hi


def _side(side: str) -> int:
    if side not in ("a", "b"):
        raise ConfigError(f"subspace match: side={side!r} is unknown; use 'a' (first net) or 'b'")
    return 0 if side == "a" else 1


def _minimal(c: _Coords, start, side: int, v: int, eps: float, order: str, rng) -> Match | None:
    """v-minimal match from the maximum match ``start`` = (ja, jb) of c; v a neuron index."""
    if v not in (c.live_a, c.live_b)[side][start[side]]:
        return None
    if order not in ("index", "random"):
        raise ConfigError(f"subspace match: order={order!r} is unknown; use 'index' or 'random'")
    sub = c.restrict(*start)  # the rest runs on |X*| + |Y*| coordinates
    cur = [sub.live_a, sub.live_b]  # neuron indices, ascending like every live array
    cand = [(s, int(u)) for s in (0, 1) for u in cur[s] if (s, u) != (side, v)]
    if order == "random":
        cand = [cand[i] for i in np.random.default_rng(rng).permutation(len(cand))]
    rounds = 0
    for s, u in cand:
        if u not in cur[s]:
            continue
        trial = list(cur)
        trial[s] = trial[s][trial[s] != u]
        ja, jb, r = sub.prune(eps, np.searchsorted(sub.live_a, trial[0]), np.searchsorted(sub.live_b, trial[1]))
        rounds += r
        if v in (sub.live_a[ja], sub.live_b[jb])[side]:
            cur = [sub.live_a[ja], sub.live_b[jb]]
            if len(ja) + len(jb) < 0.75 * (len(sub.live_a) + len(sub.live_b)):  # fewer rows from here on
                sub = sub.restrict(ja, jb)
    ix, iy = np.asarray(cur[0]), np.asarray(cur[1])
    return Match(ix, iy, (len(ix) + len(iy)) / (c.n_a + c.n_b), rounds, eps)


def minimal_match(a, b, side: str, v: int, eps: float, order: str = "index", rng=None, *,
                  zero_tol: float = 1e-16, method: str = "qr") -> Match | None:
    """The v-minimal eps-match of neuron v of net ``side`` ('a' or 'b'), or None when v is not in
    the maximum match. order: deletions tried in index order (net A first) or in a random order
    drawn from rng (a seed or numpy Generator); ``rounds`` sums the rounds of every trial."""
    eps, s = _check_eps(eps), _side(side)
    c = _Coords.build(a, b, zero_tol, method)
    n = (c.n_a, c.n_b)[s]
    if not 0 <= v < n:
        raise ConfigError(f"subspace match: neuron {v} of net {side} does not exist; it has {n} neurons")
    ja, jb, _ = c.prune(eps)
    return _minimal(c, (ja, jb), s, int(v), eps, order, rng)


def simple_matches(a, b, eps: float, neurons: Iterable[tuple[str, int]] | None = None, *,
                   zero_tol: float = 1e-16, method: str = "qr") -> list[Match]:
    """The distinct v-minimal matches of the given neurons (pairs like ("a", 3), ("b", 0); default
    every neuron of the maximum match), in order of first appearance, deduplicated by (ix, iy).
    Each costs O(m) maximum matches: limit ``neurons`` on wide layers."""
    eps = _check_eps(eps)
    c = _Coords.build(a, b, zero_tol, method)
    ja, jb, _ = c.prune(eps)
    if neurons is None:
        neurons = [("a", int(v)) for v in np.sort(c.live_a[ja])] + [("b", int(v)) for v in np.sort(c.live_b[jb])]
    found: dict[tuple, Match] = {}
    for side, v in neurons:
        s = _side(side)
        n = (c.n_a, c.n_b)[s]
        if not 0 <= v < n:
            raise ConfigError(f"subspace match: neuron {v} of net {side} does not exist; it has {n} neurons")
        m = _minimal(c, (ja, jb), s, int(v), eps, "index", None)
        if m is not None:
            found.setdefault((tuple(m.ix), tuple(m.iy)), m)
    return list(found.values())
