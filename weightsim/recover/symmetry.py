"""Symmetry canonicalization of hidden neurons: one representative [w; b] per symmetry orbit.

A hidden neuron with incoming weights w, bias b and outgoing weights a contributes a sigma(w.x + b).
Per activation class (``sign_class`` of the architecture spec's registry, nets/spec.py):
  odd (tanh):           a sigma(z) = (-a) sigma(-z)                    -> flip the sign of [w; b] and a
  even_linear (softplus, GELU, SiLU): a sigma(z) = a sigma(-z) + a z   -> flip [w; b], keep a (a linear leak)
  relu:                 as even_linear, and a sigma(z) = (c a) sigma(z / c), c > 0
                        -> [w; b] scaled to unit norm, its norm moved into a, then the sign flip
The sign is chosen so that [w; b] . ref > 0: ref = e_1 (the first input weight, the published rule)
or a fixed random direction (never ~0 for a whole layer, e.g. a blank border pixel).
"""

from __future__ import annotations

import torch
from torch import Tensor

from weightsim.recover.teachers import ACTIVATIONS


def sign_reference(dim: int, rule: str = "first", seed: int = 0) -> Tensor:
    """(dim,) direction whose sign fixes the orbit: "first" = e_1, "random" = a seeded unit vector."""
    if rule == "first":
        return torch.eye(dim, dtype=torch.float64)[0]
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    return v / v.norm()


def canonicalize(W: Tensor, b: Tensor, A: Tensor, act: str, ref: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """W (h, d), b (h,), A (out, h) -> feats (h, d+1) canonical [w; b], sign (h,) of the flip, A' (out, h).

    feats row i with outgoing column A'[:, i] is neuron i's orbit representative (exactly the same
    function for odd; up to the linear term a z for a flipped even-linear or ReLU neuron).
    """
    a = ACTIVATIONS[act]
    f = torch.cat([W, b[:, None]], 1).double()
    A = A.double()
    if a.positive_homogeneous:
        scale = f.norm(dim=1).clamp_min(1e-300)  # relu(c z) = c relu(z)
        f, A = f / scale[:, None], A * scale
    ref = sign_reference(f.shape[1]) if ref is None else ref.double()
    sign = torch.where(f @ ref < 0, -1.0, 1.0).double()
    f = f * sign[:, None]
    if a.odd:
        A = A * sign
    return f, sign, A


def leak_sign(act: str) -> bool:
    """True when flipping a neuron's sign keeps its outgoing weights (and leaks a linear term)."""
    return not ACTIVATIONS[act].odd
