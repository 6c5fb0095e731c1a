"""How well a recovered MLP matches its teacher, neuron by neuron and layer by layer.

Hidden layer l: teacher neurons T_i = [w_i; b_i], recovered R_j = [w_j; b_j] with R's input columns
mapped into the teacher's previous-layer neurons (through layer l-1's matching); per teacher
neuron the absolute-cosine distance to its nearest recovered neuron, d_i = 1 - max_j |cos(T_i, R_j)|;
a one-to-one matching (linear assignment on |cos|) aligns sign (and, for ReLU, scale) and gives the
relative weight error ||R_j' - T_i|| / ||T_i|| (a teacher neuron left without partner counts 1).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from weightsim.recover.ec import constant_inputs, fold_constants
from weightsim.recover.teachers import layers, sign_class


def unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)


def recovery_metrics(teacher: nn.Module, net: nn.Module, x: Tensor | None = None, tol: float = 1e-3) -> dict:
    """teacher, net: MLPs (Linear, act, ..., Linear) of one activation. x: probe inputs (n, d_in): inputs
    constant over x are folded into the biases of both first (their weights are not identifiable).

    Returns teacher_sizes, sizes, overhead = sum(sizes)/sum(teacher_sizes) - 1, nearest_dist (per
    teacher neuron, layer by layer), recovered_frac (d_i < tol), max_nearest_dist, weight_rel_err
    (largest over the matched hidden neurons and the output weights), excess (recovered neurons not
    matched to a teacher neuron within tol), ``layers``: the same per hidden layer; with x also
    preact_recovered_frac: the share of first-layer teacher neurons whose pre-activation vector over x
    has |cos| > 1 - tol with a recovered neuron's (the function-space view, for inputs whose weight
    directions the data does not pin down)."""
    (lt, act), (lr, _) = layers(teacher), layers(net)
    kind = sign_class(act)
    if len(lt) != len(lr) or lt[0].in_features != lr[0].in_features or lt[-1].out_features != lr[-1].out_features:
        raise ValueError(f"teacher {[m.in_features for m in lt]} and net {[m.in_features for m in lr]} differ in depth "
                         f"or input/output sizes")
    get = lambda m: (m.weight.detach().double(), m.bias.detach().double())  # noqa: E731
    per_layer, prev_map = [], None  # prev_map (r'_prev, r_prev): recovered previous neurons -> teacher's
    for l in range(len(lt) - 1):
        (Wt, bt), (Wr, br) = get(lt[l]), get(lr[l])
        if l == 0 and x is not None:
            mask, values = constant_inputs(x.double().flatten(1))
            (Wt, bt), (Wr, br) = fold_constants(Wt, bt, mask, values), fold_constants(Wr, br, mask, values)
        Wr = Wr if prev_map is None else Wr @ prev_map  # recovered inputs in teacher's previous neurons
        T, R = torch.cat([Wt, bt[:, None]], 1), torch.cat([Wr, br[:, None]], 1)
        entry, prev_map = match_layer(T, R, kind, tol)
        per_layer.append(entry)
    if x is not None:  # first layer, as functions on the data: |cos| between pre-activation vectors over x
        xs = x.double().flatten(1)
        Zt, Zr = xs @ get(lt[0])[0].T + get(lt[0])[1], xs @ get(lr[0])[0].T + get(lr[0])[1]
        C = (unit(Zt.T) @ unit(Zr.T).T).abs()
        pre = (1 - C.max(1).values).clamp_min(0).tolist() if C.shape[1] else [1.0] * C.shape[0]
        per_layer[0]["preact_nearest_dist"] = pre
    Wt, _ = get(lt[-1])
    Wr, _ = get(lr[-1])
    out_err = float((Wr @ prev_map - Wt).norm() / Wt.norm()) if Wt.norm() > 0 else 0.0
    nearest = [d for e in per_layer for d in e["nearest_dist"]]
    sizes, tsizes = [e["size"] for e in per_layer], [e["teacher_size"] for e in per_layer]
    return {"teacher_sizes": tsizes, "sizes": sizes, "overhead": sum(sizes) / sum(tsizes) - 1,
            "nearest_dist": nearest, "recovered_frac": float(np.mean([d < tol for d in nearest])),
            "max_nearest_dist": max(nearest), "output_rel_err": out_err,
            "weight_rel_err": max([out_err] + [e["weight_rel_err"] for e in per_layer]),
            "excess": sum(e["excess"] for e in per_layer), "tol": tol, "layers": per_layer,
            **({"preact_recovered_frac": float(np.mean([d < tol for d in per_layer[0]["preact_nearest_dist"]]))}
               if x is not None else {})}


def match_layer(T: Tensor, R: Tensor, kind: str, tol: float) -> tuple[dict, Tensor]:
    """T (r, D) teacher and R (r', D) recovered [w; b] in the same input coordinates -> the layer's
    metrics and the (r', r) map taking the next layer's recovered input columns to the teacher's
    neurons (column j of the next layer times sign, or ReLU scale, lands at its partner i)."""
    r, r2 = len(T), len(R)
    C = (unit(T) @ unit(R).T).abs() if r2 else torch.zeros(r, 0, dtype=torch.float64)
    nearest = (1 - C.max(1).values).clamp_min(0).tolist() if r2 else [1.0] * r
    rows, cols = linear_sum_assignment(-C.numpy()) if r2 else (np.zeros(0, int), np.zeros(0, int))
    errs = np.ones(r)
    to_teacher = torch.zeros(r2, r, dtype=torch.float64)
    matched, pairs = 0, []
    for i, j in zip(rows, cols):
        s = 1.0 if float(T[i] @ R[j]) >= 0 else -1.0
        if kind == "relu":  # relu(c z) = c relu(z): compare directions, carry the scale c forward
            c = float(R[j].norm() / T[i].norm())
            errs[i] = float((s * unit(R[j]) - unit(T[i])).norm())
            to_teacher[j, i] = c
        else:
            errs[i] = float((s * R[j] - T[i]).norm() / T[i].norm())
            to_teacher[j, i] = s if kind == "odd" else 1.0  # even-linear: a flip keeps the outgoing weight
        matched += int(1 - float(C[i, j]) < tol)
        pairs.append((int(i), int(j), s))
    return ({"teacher_size": r, "size": r2, "nearest_dist": nearest,
             "recovered_frac": float(np.mean([d < tol for d in nearest])), "weight_rel_err": float(errs.max()),
             "excess": r2 - matched, "pairs": pairs}, to_teacher)


def teacher_in_students(teacher: nn.Module, first_w: Tensor, first_b: Tensor, x: Tensor, tol: float = 1e-3) -> dict:
    """Diagnostic of the expand step, first hidden layer: are the teacher's neurons in the students at all?

    first_w (N, h, d), first_b (N, h): the students' first layers. Per teacher neuron: the median over
    students of its abs-cosine distance to the student's nearest neuron ([w; b], constant inputs of x
    folded), how many students hold it within tol, and the share of probe inputs on which it is active
    (pre-activation > 0; for ReLU a neuron active on none or on all inputs is not identifiable)."""
    lin = layers(teacher)[0][0]
    mask, values = constant_inputs(x.double().flatten(1))
    Wt, bt = fold_constants(lin.weight.detach().double(), lin.bias.detach().double(), mask, values)
    T = unit(torch.cat([Wt, bt[:, None]], 1))
    Ws, bs = fold_constants(first_w.double(), first_b.double(), mask, values)
    S = unit(torch.cat([Ws, bs[..., None]], 2))  # (N, h, D)
    dist = 1 - (S @ T.T).abs().max(1).values  # (N, r)
    active = ((x.double().flatten(1) @ Wt.T + bt) > 0).double().mean(0)
    return {"median_dist": dist.median(0).values.tolist(), "students_within_tol": (dist < tol).sum(0).tolist(),
            "active_share": active.tolist()}
