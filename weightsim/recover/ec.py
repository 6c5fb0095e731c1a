"""Expand-and-Cluster (Martinelli et al., ICML 2024): recover an MLP's weights and layer sizes from
its input-output map.

Expand: N students, each hidden layer rho times the teacher's, imitate the teacher at probe inputs.
Cluster, one hidden layer at a time: canonicalize each student neuron's [w; b] for its activation's
symmetry, cluster the pooled neurons (cluster.py), keep the clusters shared by >= gamma N students,
collapse each to one neuron. A layer that is not the last is written into every student (its
outgoing weights: per student, the sum over that student's members) and the students are fine-tuned
before the next layer is clustered. The last collapse gives one net, fine-tuned on the probe data.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from weightsim.errors import ConfigError, warn
from weightsim.recover.cluster import PRESETS, Clusters, cluster_layer
from weightsim.recover.options import ECConfig
from weightsim.recover.students import OPTIMIZERS, Students, fit, init_students, mlp, train
from weightsim.recover.symmetry import canonicalize, leak_sign, sign_reference
from weightsim.recover.teachers import ACTIVATIONS, activation_module, layers, sign_class


@dataclass
class Recovered:
    """The recovered net: ``net`` (nn.Sequential of Linear and activation layers, float64) plus, for
    even-linear and ReLU activations, ``linear`` (nn.Linear d_in -> d_out: the affine term a sign flip
    leaks, fitted by least squares then fine-tuned; None for odd activations). f(x) = net(x) + linear(x).
    sizes: recovered hidden widths; log: what each step did; clusters: one Clusters per hidden layer."""

    net: nn.Sequential
    linear: nn.Linear | None
    sizes: list[int]
    log: dict
    clusters: list[Clusters] = field(default_factory=list)

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            out = self.net(x)
            return out if self.linear is None else out + self.linear(x)


def check_options(ec: ECConfig, preset: str) -> None:
    """One ConfigError line per bad option, before any training."""
    if ec.width_factor < 1:
        raise ConfigError(f"width_factor={ec.width_factor} < 1: students must be at least as wide as the teacher "
                          f"(overparameterised); use width_factor >= 1 (e.g. 4)")
    if ec.gamma * ec.n_students < 2 or ec.gamma > 1:
        raise ConfigError(f"gamma * n_students = {ec.gamma} * {ec.n_students} = {ec.gamma * ec.n_students:g}: a "
                          f"cluster must hold neurons of >= 2 students, so need 2 <= gamma * n_students and gamma <= 1; "
                          f"raise n_students to >= {math.ceil(2 / ec.gamma)} or gamma")
    if preset not in PRESETS:
        raise ConfigError(f"preset '{preset}': choose from {', '.join(PRESETS)}")
    if ec.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer '{ec.optimizer}': choose from {', '.join(OPTIMIZERS)}")
    if ec.top_students < 1:
        raise ConfigError(f"top_students={ec.top_students}: need >= 1")
    if ec.cut not in (None, "first", "stable"):
        raise ConfigError(f"cut '{ec.cut}': choose from first (the published rule) or stable")
    if ec.metric not in ("raw", "data"):
        raise ConfigError(f"metric '{ec.metric}': choose from raw (L2 between [w; b], the published) or data "
                          f"(L2 between pre-activations on the probe data)")
    if ec.student_dtype not in (None, "float64", "float32"):
        raise ConfigError(f"student_dtype '{ec.student_dtype}': choose from float64 or float32 (null: the optimizer's)")
    if ec.probes_per_param <= 0:
        raise ConfigError(f"probes_per_param={ec.probes_per_param}: need > 0 (e.g. 4)")


def student_params(teacher: nn.Module, width_factor: float) -> int:
    """Parameters of one student: hidden widths ceil(width_factor * the teacher's), same in/out sizes."""
    lins, _ = layers(teacher)
    sizes = [lins[0].in_features, *(math.ceil(width_factor * lin.out_features) for lin in lins[:-1]),
             lins[-1].out_features]
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))  # weights + biases of each Linear


def probe_count(teacher: nn.Module, ec: ECConfig) -> int:
    """The default number of probe inputs: ceil(probes_per_param x one student's parameter count)
    (docs/recover.md, "Probes")."""
    return math.ceil(ec.probes_per_param * student_params(teacher, ec.width_factor))


def check_probes(n: int, teacher: nn.Module, ec: ECConfig) -> None:
    """Warn when the probes pin a student down too loosely: n < min_probes_per_param x its parameters."""
    P = student_params(teacher, ec.width_factor)
    if n < ec.min_probes_per_param * P:
        warn(f"{n} probe inputs for students of {P} parameters (< {ec.min_probes_per_param:g} x): students can fit "
             f"them without holding the teacher's neurons; use >= {probe_count(teacher, ec)} probes "
             f"(teacher.n=null draws {ec.probes_per_param:g} x the student's parameters) or a smaller width_factor")


def constant_inputs(x: Tensor) -> tuple[Tensor, Tensor]:
    """(d,) mask of the inputs that never vary over x (n, d), and their values."""
    return (x.max(0).values - x.min(0).values) == 0, x[0]


def fold_constants(W: Tensor, b: Tensor, mask: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """W (..., h, d), b (..., h): the weights on constant inputs moved into the bias (b + W_c c; W_c = 0):
    the same function on the probe data, and no unidentifiable coordinates left in [w; b]."""
    b = b + W[..., mask] @ values[mask]
    W = W.clone()
    W[..., mask] = 0
    return W, b


def data_map(h: Tensor) -> Tensor:
    """K (D, D), D = d + 1, for a layer whose inputs on the probe data are h (n, d): [w; b] K =
    [S w; b + w.mu] with mu the mean and S = C^(1/2) the square root of the covariance of h, so that
    ||([w; b] - [w'; b']) K||^2 = mean over the data of the squared difference of the two pre-activations.
    Weight directions the data never explores (constant inputs, a low-rank input) weigh nothing."""
    mu = h.mean(0)
    evals, evecs = torch.linalg.eigh(torch.cov(h.T, correction=0).reshape(h.shape[1], h.shape[1]))
    S = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    d = h.shape[1]
    K = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    K[:d, :d], K[:d, d], K[d, d] = S, mu, 1.0
    return K


def layer_inputs(s: Students, x: Tensor, l: int, k: int, act: str) -> Tensor:
    """The inputs (n, d_l) of hidden layer l of student k at x."""
    h = x
    with torch.no_grad():
        for i in range(l):
            W, B = s.layer(i)
            h = activation_module(act)(h @ W[k].T + B[k])
    return h


def importance(s: Students, l: int, L: int) -> Tensor:
    """(N, h_l): for each neuron of hidden layer l (0-based) of each student, a bound on how much the
    output moves per unit of its activation: g_j = sum_k |W_{l+1}[k, j]| g_k, with g = 1 at the
    outputs (every covered activation has |sigma'| <~ 1). A neuron that only feeds dead neurons has g ~ 0."""
    g = torch.ones(s.n, s.layer(L)[0].shape[1], dtype=torch.float64)  # (N, d_out)
    for k in range(L, l, -1):  # Linear layers from the output down to the one after layer l
        g = (s.layer(k)[0].abs() * g[:, :, None]).sum(1)  # (N, in of layer k)
    return g


def collapse(c: Clusters, feats: Tensor, A: Tensor, owner: np.ndarray, out_norm: Tensor, order: list[int],
             top: int, preset: str, act: str, n: int) -> tuple[Tensor, Tensor, list[int], int]:
    """One neuron per cluster: feats (M, D) canonical [w; b], A (out, M) canonical outgoing weights.

    The neuron is that of the best of the ``top`` lowest-loss students owning a member (its members
    averaged if it owns several; ``robust``: weighted by their outgoing norms, and a cluster without
    such a student takes the best student that has one instead of being dropped).
    Returns rep (r', D), per-student outgoing A_s (n, out, r') (sum of that student's aligned members),
    the winning student of each cluster and how many clusters were dropped."""
    reps, winners, cols, dropped = [], [], [], 0
    odd = not leak_sign(act)
    for g in c.members:
        owners = owner[g]
        cand = [k for k in order[:top] if k in owners]
        if not cand and preset == "robust":
            cand = [k for k in order if k in owners]
        if not cand:
            dropped += 1
            continue
        mine = g[owners == cand[0]]
        s = torch.tensor(c.align[mine])
        w = out_norm[mine] if preset == "robust" else torch.ones(len(mine), dtype=torch.float64)
        reps.append(((feats[mine] * s[:, None]) * w[:, None]).sum(0) / w.sum())
        winners.append(cand[0])
        sa = torch.tensor(c.align[g]) if odd else torch.ones(len(g), dtype=torch.float64)
        col = torch.zeros(n, A.shape[0], dtype=torch.float64)
        col.index_add_(0, torch.as_tensor(owners), (A[:, g] * sa).T)  # per student: sum of its members
        cols.append(col)
    D = feats.shape[1]
    rep = torch.stack(reps) if reps else torch.zeros(0, D, dtype=torch.float64)
    A_s = torch.stack(cols, 2) if cols else torch.zeros(n, A.shape[0], 0, dtype=torch.float64)
    return rep, A_s, winners, dropped


def student_target(y: Tensor, ec: ECConfig) -> float:
    """The students' MSE at which they are trained enough to cluster: ec.student_tol x Var(y), y (n, d_out)
    the teacher's outputs (docs/recover.md, "Training until the students are ready")."""
    return ec.student_tol * float(y.var()) if len(y) > 1 else 0.0


def student_dtype(ec: ECConfig) -> torch.dtype:
    """The students' arithmetic: ec.student_dtype, or by default float32 with L-BFGS (2.4x faster on a CPU)
    and float64 with Adam (its learning rate goes down to 1e-7, below float32's resolution of a weight ~1)."""
    return getattr(torch, ec.student_dtype or ("float64" if ec.optimizer == "adam" else "float32"))


def expand(teacher: nn.Module, x: Tensor, ec: ECConfig | None = None, *, progress=print, **overrides) -> Students:
    """The expand step: ``ec.n_students`` students, hidden widths ceil(ec.width_factor * the teacher's),
    trained together to imitate teacher(x) at x (n, d_in). ``overrides`` replace fields of ``ec``."""
    ec = (ec or ECConfig()).replace(**overrides)
    lins, teacher_act = layers(teacher)
    act = ec.activation or teacher_act
    t0 = time.perf_counter()
    x = x.double().flatten(1)
    check_probes(len(x), teacher, ec)
    with torch.no_grad():
        y = teacher.double()(x)
    widths = [math.ceil(ec.width_factor * lin.out_features) for lin in lins[:-1]]
    students = init_students(lins[0].in_features, widths, lins[-1].out_features, act, ec.n_students, ec.seed)
    students = train(students, x, y, optimizer=ec.optimizer, steps=ec.student_steps, lr=ec.lr, seed=ec.seed,
                     target=student_target(y, ec), dtype=student_dtype(ec))
    progress(f"{ec.n_students} students of widths {widths} trained on {len(x)} probes ({time.perf_counter() - t0:.1f}s): "
             f"train MSE " + " ".join(f"{v:.1e}" for v in sorted(students.losses.tolist())))
    return students


def expand_and_cluster(teacher: nn.Module, x: Tensor | None = None, ec: ECConfig | None = None, *,
                       preset: str = "robust", students: Students | None = None, progress=print,
                       **overrides) -> Recovered:
    """Recover ``teacher`` (an MLP: Linear, act, ..., Linear) from its outputs at x (n, d_in; default
    ``probe_count`` draws of N(0, I)). Settings: ``ec`` (default ECConfig(), options.py) with keyword
    ``overrides`` (e.g. n_students=4). ``preset``: robust | reference (docs/recover.md). ``students``:
    already trained students (e.g. to run both presets on one set). ec.sign_rule: "first" (the published
    rule; default of preset reference) or "random" (default of robust). ec.drop_below: robust's threshold
    on a neuron's importance relative to its student's largest. ec.metric: what the clustering's L2
    distance compares: "raw" [w; b] (the published, default) or "data" (the neurons' pre-activations on
    the probe data, ``data_map``). ec.cut: "first" (the published cut rule, default) or "stable"."""
    ec = (ec or ECConfig()).replace(**overrides)
    check_options(ec, preset)
    t0 = time.perf_counter()
    lins, teacher_act = layers(teacher)
    act = ec.activation or teacher_act
    if act not in ACTIVATIONS:
        raise ConfigError(f"activation '{act}': choose from {', '.join(ACTIVATIONS)}")
    teacher = teacher.double()
    d_in, d_out = lins[0].in_features, lins[-1].out_features
    if x is None:
        x = torch.randn(probe_count(teacher, ec), d_in, generator=torch.Generator().manual_seed(ec.seed),
                        dtype=torch.float64)
    x = x.double().flatten(1)
    with torch.no_grad():
        y = teacher(x).double()
    widths = [lin.out_features for lin in lins[:-1]]
    fit_opts = dict(optimizer=ec.optimizer, lr=ec.lr, seed=ec.seed)
    log: dict = {"teacher_sizes": widths, "activation": act, "preset": preset, "n_students": ec.n_students,
                 "width_factor": ec.width_factor, "probes": len(x), "layers": []}
    if students is None:
        students = expand(teacher, x, ec, activation=act, progress=progress)
    log["student_losses"] = students.losses.tolist()
    log["student_history"] = students.history
    log["student_seconds"] = time.perf_counter() - t0
    mask, values = constant_inputs(x)
    ref_rule = ec.sign_rule or ("first" if preset == "reference" else "random")
    cut, metric, drop_below, finetune_steps = ec.cut or "first", ec.metric, ec.drop_below, ec.finetune_steps
    s, found, all_clusters, L = students, [], [], len(widths)
    for l in range(L):
        W, B = s.layer(l)
        A, _ = s.layer(l + 1)
        if l == 0:
            W, B = fold_constants(W, B, mask, values)
        ref = sign_reference(W.shape[2] + 1, ref_rule, ec.seed)
        canon = [canonicalize(W[k], B[k], A[k], act, ref) for k in range(s.n)]
        feats = torch.cat([f for f, _, _ in canon])  # (N h, D)
        A_can = torch.cat([a for _, _, a in canon], 1)  # (out, N h)
        owner = np.repeat(np.arange(s.n), W.shape[1])
        out_norm = importance(s, l, L).flatten()  # (N h,)
        if sign_class(act) == "relu":  # relu(w.x + b) grows with ||[w; b]||: the weight moved to a
            out_norm = out_norm * torch.cat([W, B[..., None]], 2).norm(dim=2).flatten()
        if metric == "data":  # distances between pre-activations on the probe data, not between raw weights
            h = layer_inputs(s, x, l, int(torch.argmin(s.losses)), act)
            feats_d = feats @ data_map(h)
        else:
            feats_d = feats
        c = cluster_layer(feats_d, torch.as_tensor(owner), s.n, out_norm, ec.gamma, ec.beta, preset, drop_below, feats,
                          cut)
        order = torch.argsort(s.losses).tolist()
        rep, A_s, winners, dropped = collapse(c, feats, A_can, owner, out_norm, order, ec.top_students, preset, act,
                                              s.n)
        all_clusters.append(c)
        r = len(rep)
        entry = {"layer": l + 1, "size": r, "cut": c.cut, "min_size": c.min_size, **c.log,
                 "dropped_no_top_student": dropped}
        if r == 0:
            warn(f"Expand-and-Cluster kept no cluster in hidden layer {l + 1}: the students disagree; train them "
                 f"longer (student_steps) or use more students")
        if l < L - 1:  # write the layer into every student, fine-tune, go on
            new = dict(s.params)
            new[f"{2 * l}.weight"] = rep[:, :-1].expand(s.n, -1, -1).clone()
            new[f"{2 * l}.bias"] = rep[:, -1].expand(s.n, -1).clone()
            new[f"{2 * l + 2}.weight"] = A_s
            sizes = [p.shape[1] for k, p in new.items() if k.endswith(".bias")][:-1]
            s = Students(mlp(d_in, sizes, d_out, act).to("meta"), new, s.losses, [])
            s = train(s, x, y, steps=finetune_steps, target=student_target(y, ec), dtype=student_dtype(ec),
                      **fit_opts)
            entry["finetune_losses"] = s.losses.tolist()
        else:  # the last hidden layer: one net, from the best student's earlier layers
            best = order[0]
            state = {k: v[best] for k, v in s.params.items()}
            state[f"{2 * l}.weight"], state[f"{2 * l}.bias"] = rep[:, :-1], rep[:, -1]
            state[f"{2 * l + 2}.weight"] = torch.stack([A_s[k, :, i] for i, k in enumerate(winners)], 1) \
                if winners else torch.zeros(d_out, 0, dtype=torch.float64)
            found = [p.shape[0] for k, p in state.items() if k.endswith(".bias")][:-1]
        log["layers"].append(entry)
        progress(f"hidden layer {l + 1}: {r} neurons (teacher {widths[l]}), cut {c.cut:.3g}, "
                 + str({k: v for k, v in c.log.items() if k != "kept"}))
    net = mlp(d_in, found, d_out, act)
    net.load_state_dict(state)
    linear = final_affine(net, x, y, act)
    opts = dict(fit_opts, lr=ec.lr / 10)  # the published fine-tune rate: a tenth of the students'
    before = float(((Recovered(net, linear, found, {})(x) - y) ** 2).mean())
    loss = finetune(net, linear, x, y, finetune_steps, opts)
    if preset == "robust":  # neurons the fine-tuned net no longer uses (junk the students shared) go
        net, log["pruned_unused"] = prune_unused(net, linear, x, act, drop_below)
        if sum(log["pruned_unused"]):
            loss = finetune(net, linear, x, y, finetune_steps, opts)
        if L > 1:  # a shared extra neuron below the last layer that the fine-tune put to use
            target = float(students.losses.median())
            net, linear, log["pruned_redundant"], loss = prune_redundant(net, linear, x, y, act, target, loss,
                                                                          finetune_steps, opts, ec.stall)
        found = [m.out_features for m in layers(net)[0][:-1]]
    log.update(final_mse_before_finetune=before, final_mse=loss, seconds=time.perf_counter() - t0, sizes=found)
    check_fit(loss, students.losses, y, found, widths, ec.mse_warn_ratio)
    return Recovered(net, linear, found, log, all_clusters)


def check_fit(mse: float, student_mse: Tensor, y: Tensor, sizes: list[int], teacher_sizes: list[int],
              ratio: float) -> None:
    """Warn when the recovered net fits the teacher far worse than the students did: its MSE above
    ``ratio`` x the students' median (floored at 1e-12 x the outputs' variance, the noise of float64 fits)."""
    floor = 1e-12 * float(y.var()) if len(y) > 1 else 0.0
    ref = max(float(student_mse.median()), floor)
    if mse > ratio * ref:
        warn(f"the recovered net (sizes {sizes}, teacher {teacher_sizes}) has output MSE {mse:.2g}, "
             f"{mse / ref:.2g} x the students' median {float(student_mse.median()):.2g}: it is not the teacher; "
             f"check the students' losses and the probe count (probes_per_param), or use more students")


def finetune(net: nn.Sequential, linear: nn.Linear | None, x: Tensor, y: Tensor, steps: int, opts: dict) -> float:
    """Fit net (+ linear) to y at x in place; returns the final train MSE."""
    params = list(net.parameters()) + ([] if linear is None else list(linear.parameters()))
    mse = lambda idx: ((net(x) + (0 if linear is None else linear(x)) - y) ** 2).mean()[None]  # noqa: E731
    return float(fit(params, mse, len(x), steps=steps, **opts)[0][0])


def prune_unused(net: nn.Sequential, linear: nn.Linear | None, x: Tensor, act: str, drop_below: float
                 ) -> tuple[nn.Sequential, list[int]]:
    """Remove every hidden neuron whose knock-out (its outgoing weights zeroed) moves the output by less
    than ``drop_below`` times the output's RMS; returns the smaller net and how many went per layer."""
    lins = layers(net)[0]
    with torch.no_grad():
        base = net(x)
        rms = base.pow(2).mean().sqrt().clamp_min(1e-300)
        keeps = []
        for l in range(len(lins) - 1):
            nxt, keep = lins[l + 1], torch.ones(lins[l].out_features, dtype=torch.bool)
            for j in range(lins[l].out_features):
                col = nxt.weight[:, j].clone()
                nxt.weight[:, j] = 0
                keep[j] = (net(x) - base).pow(2).mean().sqrt() / rms >= drop_below  # ||f - f_{-j}|| / ||f||
                nxt.weight[:, j] = col
            keeps.append(keep)
    return without(net, keeps, act), [int((~k).sum()) for k in keeps]


def prune_redundant(net: nn.Sequential, linear: nn.Linear | None, x: Tensor, y: Tensor, act: str, target: float,
                    mse: float, steps: int, opts: dict, stall: float = 0.0
                    ) -> tuple[nn.Sequential, nn.Linear | None, list[int], float]:
    """Deep nets: each neuron of a hidden layer below the last goes when the net without it, fine-tuned
    ``steps`` iterations at most, fits y at x to MSE <= ``target`` (the students' median: as well as the students
    did with all their neurons). A layer's extra cluster that the students shared is put to use by the
    fine-tune after its collapse, and the next layer then fits another decomposition around it; its
    knock-out shows that the function does not need it. A trial fit stops once it reaches the target or
    once ``record_every`` (100) iterations lower its MSE by less than the fraction ``stall`` (a needed
    neuron's knock-out leaves an error that stays put). Returns the net, its linear path, how many went
    per layer and the final MSE (of the last net fine-tuned the full ``steps``)."""
    removed = [0] * (len(layers(net)[0]) - 1)
    for l in range(len(removed) - 1):
        j = 0
        while j < layers(net)[0][l].out_features and layers(net)[0][l].out_features > 1:
            keeps = [torch.ones(m.out_features, dtype=torch.bool) for m in layers(net)[0][:-1]]
            keeps[l][j] = False
            small, path = without(net, keeps, act), copy.deepcopy(linear)
            fit_mse = finetune(small, path, x, y, steps, dict(opts, target=target, stall=stall))
            if fit_mse <= target:
                net, linear, mse, removed[l] = small, path, fit_mse, removed[l] + 1
            else:
                j += 1
    if sum(removed):  # the smaller net fitted only down to the target: now to convergence
        mse = finetune(net, linear, x, y, steps, opts)
    return net, linear, removed, mse


def without(net: nn.Sequential, keeps: list[Tensor], act: str) -> nn.Sequential:
    """A copy of the MLP ``net`` with only the hidden neurons keeps[l] (bool (h_l,)) of each hidden layer."""
    lins = layers(net)[0]
    small = mlp(lins[0].in_features, [int(k.sum()) for k in keeps], lins[-1].out_features, act)
    new = layers(small)[0]
    with torch.no_grad():
        for l, lin in enumerate(lins):
            rows = keeps[l] if l < len(keeps) else slice(None)
            cols = keeps[l - 1] if l > 0 else slice(None)
            new[l].weight.copy_(lin.weight[rows][:, cols])
            new[l].bias.copy_(lin.bias[rows])
    return small


def final_affine(net: nn.Sequential, x: Tensor, y: Tensor, act: str) -> nn.Linear | None:
    """Odd activations: the output bias set so the mean output is the data's (returns None).
    Even-linear and ReLU: theta = argmin ||[x, 1] theta - (y - net_0(x))|| with net_0 the net without
    output bias, as a parallel linear path (the output bias moves into it)."""
    with torch.no_grad():
        net[-1].bias.zero_()
        resid = y - net(x)
        if not leak_sign(act):
            net[-1].bias.copy_(resid.mean(0))
            return None
        X1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        theta = torch.linalg.lstsq(X1, resid).solution  # (d_in + 1, d_out)
        lin = nn.Linear(x.shape[1], y.shape[1]).double()
        lin.weight.copy_(theta[:-1].T)
        lin.bias.copy_(theta[-1])
    return lin
