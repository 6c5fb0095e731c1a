"""Expand-and-Cluster pieces, fast: symmetry canonicalization (checked against function-preserving
transforms), the one-pass cut rule (against the per-height recount on real linkages, and on a linkage
built to have two maximal runs), the clustering on planted students, the metrics, a tiny end-to-end
recovery, and the CLI's report and one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from torch import nn

from tests.conftest import run_cli, train_zoo
from weightsim.errors import ConfigError
from weightsim.recover import (canonicalize, cluster_layer, expand_and_cluster, recovery_metrics,
                               synthetic_teacher)
from weightsim.recover.cluster import count_big_clusters, cut_index, labels_after, merge_aligned
from weightsim.recover.symmetry import sign_reference
from weightsim.recover.teachers import activation_module, layers



@pytest.fixture(autouse=True)
def float64():
    """These tests build float64 nets; the default dtype is restored for every other test module."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def one_layer(W, b, A, act):
    """x -> A sigma(W x + b) as a function."""
    return lambda x: activation_module(act)(x @ W.T + b) @ A.T


def affine_residual(x, d):
    """Largest residual of the least-squares fit of d (n, k) by an affine function of x (n, d_in)."""
    X1 = torch.cat([x, torch.ones(len(x), 1)], 1)
    return float((X1 @ torch.linalg.lstsq(X1, d).solution - d).abs().max())


@pytest.fixture
def neurons():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(12, 6, generator=g), torch.randn(12, generator=g), torch.randn(2, 12, generator=g),
            torch.randn(400, 6, generator=g))


def test_odd_canonical_form_is_the_same_function_and_sign_flips_do_not_change_it(neurons):
    W, b, A, x = neurons
    f, sign, A2 = canonicalize(W, b, A, "tanh")
    assert (sign < 0).any() and (sign > 0).any()  # non-vacuous: some neurons were flipped
    assert (f[:, 0] > 0).all()  # the published rule: first input weight positive
    assert torch.allclose(one_layer(f[:, :-1], f[:, -1], A2, "tanh")(x), one_layer(W, b, A, "tanh")(x), atol=1e-12)
    s = torch.where(torch.rand(12, generator=torch.Generator().manual_seed(1)) < 0.5, -1.0, 1.0)
    Wf, bf, Af = W * s[:, None], b * s, A * s  # a function-preserving transform of a tanh layer ...
    assert torch.allclose(one_layer(Wf, bf, Af, "tanh")(x), one_layer(W, b, A, "tanh")(x), atol=1e-12)
    assert not torch.allclose(Wf, W)
    f2, _, A3 = canonicalize(Wf, bf, Af, "tanh")  # ... leaves the canonical form unchanged
    assert torch.allclose(f2, f) and torch.allclose(A3, A2)


@pytest.mark.parametrize("act", ["softplus", "gelu", "silu", "relu"])
def test_even_linear_canonical_form_differs_by_an_affine_term_only(neurons, act):
    W, b, A, x = neurons
    f, sign, A2 = canonicalize(W, b, A, act)
    assert (sign < 0).any()
    scale = torch.cat([W, b[:, None]], 1).norm(dim=1) if act == "relu" else torch.ones(12)
    canon = one_layer(f[:, :-1], f[:, -1], A2, act)(x)
    diff = canon - one_layer(W, b, A, act)(x)
    assert diff.abs().max() > 1e-2  # the flips did leak a linear term ...
    assert affine_residual(x, diff) < 1e-10  # ... and nothing but a linear term
    assert torch.allclose(A2, A * scale)  # outgoing weights keep their sign (ReLU: times the norm)


def test_relu_canonical_form_is_invariant_to_positive_rescaling(neurons):
    W, b, A, x = neurons
    c = torch.rand(12, generator=torch.Generator().manual_seed(2)) * 3 + 0.1
    Wc, bc, Ac = W * c[:, None], b * c, A / c  # relu(c z) / c = relu(z): function-preserving
    assert torch.allclose(one_layer(Wc, bc, Ac, "relu")(x), one_layer(W, b, A, "relu")(x), atol=1e-12)
    f1, _, A1 = canonicalize(W, b, A, "relu")
    f2, _, A2 = canonicalize(Wc, bc, Ac, "relu")
    assert torch.allclose(f1, f2) and torch.allclose(A1, A2)
    assert torch.allclose(f1.norm(dim=1), torch.ones(12))


def test_random_sign_reference_does_not_depend_on_one_input_weight(neurons):
    W, b, A, _ = neurons
    W = W.clone()
    W[:, 0] = 0  # a blank input: the published rule cannot decide the sign
    f, _, _ = canonicalize(W, b, A, "tanh")
    assert (f[:, 0] == 0).all()
    f, _, _ = canonicalize(W, b, A, "tanh", sign_reference(7, "random"))
    assert (f @ sign_reference(7, "random") > 0).all()


def test_one_pass_cut_counts_equal_the_per_height_recount():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 4))
    pts = np.concatenate([centers[rng.integers(0, 6, 60)] + 0.05 * rng.normal(size=(60, 4)),
                          rng.normal(size=(20, 4)) * 2])
    Z = linkage(pts, "average")
    for k in (2, 3, 5):
        counts = count_big_clusters(Z, len(pts), k)
        brute = [np.sum(np.bincount(fcluster(Z, Z[i, 2], "distance")) >= k) for i in range(len(Z))]
        assert counts.tolist() == brute
        j = cut_index(counts)
        labels = labels_after(Z, len(pts), j)
        assert np.array_equal(labels_after(Z, len(pts), j) == labels[0], fcluster(Z, Z[j, 2], "distance")
                              == fcluster(Z, Z[j, 2], "distance")[0])


def test_cut_is_at_the_end_of_the_first_maximal_run():
    # 8 leaves, pairs first (heights 1-4), then pairs of pairs (5, 6), then all: with clusters of >= 2,
    # counts are 1 2 3 4 | 3 2 1; built so that a second run of 4 cannot happen, and with >= 4: 0 0 0 0 1 2 1
    Z = np.array([[0, 1, 1, 2], [2, 3, 2, 2], [4, 5, 3, 2], [6, 7, 4, 2],
                  [8, 9, 5, 4], [10, 11, 6, 4], [12, 13, 7, 8]], dtype=float)
    assert count_big_clusters(Z, 8, 2).tolist() == [1, 2, 3, 4, 3, 2, 1]
    assert cut_index(count_big_clusters(Z, 8, 2)) == 3
    assert count_big_clusters(Z, 8, 4).tolist() == [0, 0, 0, 0, 1, 2, 1]
    assert cut_index(count_big_clusters(Z, 8, 4)) == 5
    assert cut_index(np.array([0, 2, 2, 2, 1, 2, 2, 0])) == 3  # the first run of the maximum, at its end
    labels = labels_after(Z, 8, 3)
    assert len(set(labels.tolist())) == 4 and labels[0] == labels[1] != labels[2]


def planted_students(seed: int, n: int = 10, dup: int = 3, junk: int = 21, noise: float = 1e-3):
    """n students x (8 teacher neurons, random sign, noise; dup duplicates; junk with |a| ~ 0)."""
    g = torch.Generator().manual_seed(seed)
    T = torch.cat([torch.randn(8, 20, generator=torch.Generator().manual_seed(99)),
                   torch.rand(8, 1, generator=torch.Generator().manual_seed(98))], 1)
    feats, owner, a = [], [], []
    for s in range(n):
        sign = torch.where(torch.rand(8, generator=g) < 0.5, -1.0, 1.0)
        mine = [T * sign[:, None] + noise * torch.randn(8, 21, generator=g)]
        pick = torch.randint(0, 8, (dup,), generator=g)
        mine.append(T[pick] + noise * torch.randn(dup, 21, generator=g))
        mine.append(torch.randn(junk, 21, generator=g) * 2)
        f, _, _ = canonicalize(torch.cat(mine)[:, :-1], torch.cat(mine)[:, -1], torch.ones(1, 8 + dup + junk), "tanh")
        feats.append(f)
        owner += [s] * len(f)
        a += [1.0] * (8 + dup) + [1e-7] * junk
    return T, torch.cat(feats), torch.tensor(owner), torch.tensor(a)


def test_robust_clustering_finds_exactly_the_planted_neurons():
    T, feats, owner, a = planted_students(0)
    c = cluster_layer(feats, owner, 10, a, preset="robust")
    assert len(c.members) == 8
    means = torch.stack([(feats[g] * torch.tensor(c.align[g])[:, None]).mean(0) for g in c.members])
    cos = (nn.functional.normalize(T, dim=1) @ nn.functional.normalize(means, dim=1).T).abs()
    assert (1 - cos.max(1).values).max() < 1e-4
    ref = cluster_layer(feats, owner, 10, a, preset="reference")
    assert len(ref.members) >= 8 and ref.log["neurons"] == 320 and c.log["dropped_zero_outgoing"] == 210


def students_with_leftovers(seed: int, n: int = 10, left: int = 4, noise: float = 1e-4, off: float = 0.3):
    """n students of the 6 unit-norm neurons of a 16-6 ReLU teacher (noise) plus ``left`` leftovers each:
    a teacher neuron moved by ``off`` in a random direction, as important as the rest (what the
    importance drop leaves behind in a ReLU student)."""
    T = nn.functional.normalize(torch.randn(6, 17, generator=torch.Generator().manual_seed(7)), dim=1)
    g = torch.Generator().manual_seed(seed)
    feats, owner = [], []
    for s in range(n):
        pick = torch.randint(0, 6, (left,), generator=g)
        moved = T[pick] + off * nn.functional.normalize(torch.randn(left, 17, generator=g), dim=1)
        feats += [T + noise * torch.randn(6, 17, generator=g), nn.functional.normalize(moved, dim=1)]
        owner += [s] * (6 + left)
    return T, torch.cat(feats), torch.tensor(owner)


@pytest.mark.parametrize("seed", range(5))
def test_robust_trims_the_leftovers_a_teacher_cluster_absorbed_below_the_cut(seed):
    """The published cut lands at ~0.36 (the teacher neurons are O(1) apart), where each teacher cluster
    has absorbed leftovers 0.3 away: the reference clusters hold 13-22 members and their means miss
    the teacher by ~1e-3; robust keeps exactly the 10 copies of each teacher neuron."""
    T, f, o = students_with_leftovers(seed)
    robust = cluster_layer(f, o, 10, torch.ones(len(o)), preset="robust")
    ref = cluster_layer(f, o, 10, torch.ones(len(o)), preset="reference")
    assert robust.cut == ref.cut > 0.3  # the same cut: the trim does not move it
    assert sorted(len(g) for g in robust.members) == [10] * 6 and robust.log["trimmed"] == 40
    copies = [torch.arange(s * 10, s * 10 + 6) for s in range(10)]  # each student's 6 teacher copies
    assert sorted(np.concatenate(robust.members).tolist()) == sorted(torch.cat(copies).tolist())
    assert max(len(g) for g in ref.members) > 10  # the published clusters hold leftovers


def test_stable_cut_finds_the_planted_neurons_in_every_renoising():
    # the published cut (end of the first run with the most big clusters) keeps extra clusters on most
    # re-noisings: a teacher cluster with many members splits into two big halves on the way up
    kept = {"reference": [], "robust": [], "stable": []}
    for seed in range(20):
        _, feats, owner, a = planted_students(seed)
        kept["reference"].append(len(cluster_layer(feats, owner, 10, a, preset="reference").members))
        kept["robust"].append(len(cluster_layer(feats, owner, 10, a, preset="robust", cut="first").members))
        kept["stable"].append(len(cluster_layer(feats, owner, 10, a, preset="robust", cut="stable").members))
    assert kept["stable"] == [8] * 20
    assert sum(k > 8 for k in kept["reference"]) >= 15, kept
    assert sum(k == 8 for k in kept["robust"]) >= 18, kept


def test_merge_aligned_joins_clusters_within_beta_up_to_sign():
    rng = np.random.default_rng(1)
    u, v = np.eye(5)[0], np.eye(5)[1]
    f = np.concatenate([u + 0.01 * rng.normal(size=(4, 5)), -1.2 * u + 0.01 * rng.normal(size=(4, 5)),
                        v + 0.01 * rng.normal(size=(4, 5))])
    groups = [np.arange(0, 4), np.arange(4, 8), np.arange(8, 12)]
    merged, _, n = merge_aligned(f, groups, [2e-4, 2e-4, 2e-4], math.pi / 6)  # their own spread: ~2e-4
    assert n == 1 and sorted(map(len, merged)) == [4, 8]
    # two tight clusters 20 degrees apart (< beta) are two neurons, not pieces of one: kept apart
    w = math.cos(0.35) * u + math.sin(0.35) * v
    f2 = np.concatenate([u + 1e-4 * rng.normal(size=(4, 5)), w + 1e-4 * rng.normal(size=(4, 5))])
    merged, _, n = merge_aligned(f2, [np.arange(0, 4), np.arange(4, 8)], [1e-8, 1e-8], math.pi / 6)
    assert n == 0 and len(merged) == 2


def test_metrics_on_a_permuted_flipped_copy_and_on_missing_and_extra_neurons():
    t = synthetic_teacher(10, [6, 4], "tanh", seed=3)
    x = torch.randn(300, 10, generator=torch.Generator().manual_seed(0))
    copy = nn.Sequential(*[nn.Linear(m.in_features, m.out_features) if isinstance(m, nn.Linear) else nn.Tanh()
                           for m in t])
    perm1, perm2 = torch.randperm(6), torch.randperm(4)
    s1 = torch.tensor([1.0, -1, 1, -1, -1, 1])
    with torch.no_grad():  # permute and sign-flip the hidden neurons: a function-preserving transform
        copy[0].weight.copy_((t[0].weight * s1[:, None])[perm1]), copy[0].bias.copy_((t[0].bias * s1)[perm1])
        copy[2].weight.copy_((t[2].weight * s1)[perm2][:, perm1]), copy[2].bias.copy_(t[2].bias[perm2])
        copy[4].weight.copy_(t[4].weight[:, perm2]), copy[4].bias.copy_(t[4].bias)
    assert torch.allclose(copy(x), t(x), atol=1e-12) and not torch.allclose(copy[0].weight, t[0].weight)
    m = recovery_metrics(t, copy, x)
    assert m["recovered_frac"] == 1 and m["overhead"] == 0 and m["excess"] == 0 and m["weight_rel_err"] < 1e-12
    small = nn.Sequential(nn.Linear(10, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    with torch.no_grad():  # one first-layer neuron missing
        small[0].weight.copy_(t[0].weight[1:]), small[0].bias.copy_(t[0].bias[1:])
        small[2].weight.copy_(t[2].weight[:, 1:]), small[2].bias.copy_(t[2].bias)
        small[4].weight.copy_(t[4].weight), small[4].bias.copy_(t[4].bias)
    m = recovery_metrics(t, small, x)
    assert m["layers"][0]["recovered_frac"] == 5 / 6 and m["weight_rel_err"] == 1.0
    assert m["overhead"] == pytest.approx(-0.1)
    big = nn.Sequential(nn.Linear(10, 7), nn.Tanh(), nn.Linear(7, 4), nn.Tanh(), nn.Linear(4, 1))
    with torch.no_grad():  # an extra neuron with zero outgoing weights: same function, one excess
        big[0].weight.copy_(torch.cat([t[0].weight, torch.randn(1, 10)]))
        big[0].bias.copy_(torch.cat([t[0].bias, torch.zeros(1)]))
        big[2].weight.copy_(torch.cat([t[2].weight, torch.zeros(4, 1)], 1)), big[2].bias.copy_(t[2].bias)
        big[4].weight.copy_(t[4].weight), big[4].bias.copy_(t[4].bias)
    assert torch.allclose(big(x), t(x), atol=1e-12)
    m = recovery_metrics(t, big, x)
    assert m["recovered_frac"] == 1 and m["excess"] == 1 and abs(m["overhead"] - 0.1) < 1e-12


def test_teacher_layers_not_covered_are_named():
    with pytest.raises(ConfigError, match=r"teacher layer 1 \(BatchNorm1d\)"):
        layers(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)))
    with pytest.raises(ConfigError, match=r"LeakyReLU"):
        layers(nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(), nn.Linear(4, 1)))
    with pytest.raises(ConfigError, match="gamma"):
        expand_and_cluster(synthetic_teacher(3, [2]), n_students=3)
    with pytest.raises(ConfigError, match="width_factor"):
        expand_and_cluster(synthetic_teacher(3, [2]), width_factor=0.5)
    with pytest.raises(ConfigError, match="preset 'fancy'"):
        expand_and_cluster(synthetic_teacher(3, [2]), preset="fancy")
    with pytest.raises(ConfigError, match="activation 'sigmoid' is not covered"):
        synthetic_teacher(3, [2], "sigmoid")


def test_tiny_tanh_teacher_is_recovered_end_to_end():
    torch.set_num_threads(1)
    t = synthetic_teacher(5, [3], "tanh", seed=1)
    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(2))
    rec = expand_and_cluster(t, x, n_students=4, width_factor=2, student_steps=300, finetune_steps=300,
                             progress=lambda *_: None)
    m = recovery_metrics(t, rec.net, x)
    assert rec.sizes == [3] and m["recovered_frac"] == 1 and m["max_nearest_dist"] < 1e-6, m
    assert m["weight_rel_err"] < 1e-3 and rec.log["final_mse"] < 1e-8


def test_cli_report_and_plots(tmp_path):
    r = run_cli("recover", "teacher.d_in=5", "teacher.widths=[3]", "teacher.n=300", "teacher.seed=1",
                "ec.n_students=4", "ec.width_factor=2", "ec.student_steps=300", "ec.finetune_steps=300",
                f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "report.json").read_text())
    assert {(x["preset"], x["layer"]) for x in rows} == {(p, k) for p in ("robust", "reference") for k in (1, "all")}
    assert all(x["teacher_size"] == 3 for x in rows)
    robust = next(x for x in rows if x["preset"] == "robust" and x["layer"] == "all")
    assert robust["recovered_frac"] == 1.0
    for name in ("report.md", "report.csv", "run.json", "dendrogram.png", "weights.png", "student_losses.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "| teacher | preset |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("overrides, message", [
    (("ec.n_students=3",), "error: gamma * n_students = 0.5 * 3 = 1.5"),
    (("ec.width_factor=0.5",), "error: width_factor=0.5 < 1"),
    (("ec.width_factor=four",), "error: Error merging override ec.width_factor=four: Value 'four' of type 'str' "
                                "could not be converted to Float: set ec.width_factor to a number"),
    (("ec.n_students=10.5",), "error: Error merging override ec.n_students=10.5: Value '10.5' of type 'float' "
                              "could not be converted to Integer: set ec.n_students to an integer"),
    (("ec.n_students=4,ten", "-m"), "error: Error merging override ec.n_students=ten: Value 'ten' of type 'str' "
                                    "could not be converted to Integer: set ec.n_students to an integer"),
    (("ec.finetune_step=5",), "error: Could not override 'ec.finetune_step': Key 'finetune_step' not in 'ECConfig'"),
    # the top level is typed too (RecoverConfig, conf/recover.yaml's schema)
    (("tol=abc",), "error: Error merging override tol=abc: Value 'abc' of type 'str' could not be converted to "
                   "Float: set tol to a number"),
    (("threads=2.5",), "error: Error merging override threads=2.5: Value '2.5' of type 'float' could not be "
                       "converted to Integer: set threads to an integer"),
    (("presets=[robust,fast]",), "error: preset 'fast': choose from"),
])
def test_cli_bad_input_is_one_error_line(tmp_path, overrides, message):
    r = run_cli("recover", *overrides, f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), r.stderr


def test_cli_zoo_teacher_with_uncovered_layer_is_one_error_line(tmp_path):
    train_zoo(tmp_path / "zoo", "dataset.train_tasks=2", "dataset.unseen_tasks=0", "zoo.seeds=1", "zoo.epochs=1",
              "arch.depth=2", "arch.hidden=4", "arch.activation=leaky_relu", "logger=none", "progress=false")
    r = run_cli("recover", "teacher=zoo", f"teacher.zoo_dir={tmp_path / 'zoo'}", f"hydra.run.dir={tmp_path / 'r'}")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: teacher layer 1 (LeakyReLU)"), r.stderr


def test_teacher_in_students_counts_planted_copies():
    from weightsim.recover.metrics import teacher_in_students
    t = synthetic_teacher(6, [3], "relu", seed=2)
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    W, b = t[0].weight.detach(), t[0].bias.detach()
    g = torch.Generator().manual_seed(1)
    # student k: neurons 0 and 1 of the teacher (rescaled: the same ReLU direction) and junk; student 0 also neuron 2
    Ws = torch.stack([torch.cat([W[:2] * 2.0, W[2:] if k == 0 else torch.randn(1, 6, generator=g)]) for k in range(3)])
    bs = torch.stack([torch.cat([b[:2] * 2.0, b[2:] if k == 0 else torch.randn(1, generator=g)]) for k in range(3)])
    out = teacher_in_students(t, Ws, bs, x)
    assert out["students_within_tol"] == [3, 3, 1]
    assert out["median_dist"][0] < 1e-12 and out["median_dist"][2] > 1e-3
    assert out["active_share"] == pytest.approx(((x @ W.T + b) > 0).double().mean(0).tolist())


def test_sweep_table_groups_runs_by_setting_and_teacher_size(tmp_path):
    from weightsim.recover.plots import plot_sweep, sweep_table

    def row(size, frac, overhead, layer="all"):
        return {"activation": "tanh", "teacher_size": size, "n_students": 10, "width_factor": 2, "preset": "robust",
                "layer": layer, "recovered_frac": frac, "overhead": overhead, "weight_rel_err": 1e-4, "seconds": 5.0}

    rows = [row(8, 1.0, 0.0), row(8, 0.5, -0.25), row(8, 0.0, 9.0, layer=1), row(16, 1.0, 0.125)]
    table = sweep_table(rows)
    assert [(r["teacher_size"], r["runs"]) for r in table] == [(8, 2), (16, 1)]  # layer rows are not runs
    assert table[0]["recovered_frac"] == 0.75 and table[0]["all_recovered"] == 1
    assert table[0]["overhead"] == -0.125 and table[0]["max_overhead"] == 0.0
    assert plot_sweep(rows, tmp_path / "sweep.png").stat().st_size > 1000


def test_recover_yaml_takes_its_ec_defaults_from_the_dataclass():
    """conf/recover.yaml holds no copy of the settings: the composed ``ec`` is ECConfig() field for field,
    the top level RecoverConfig()'s."""
    from dataclasses import asdict

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from weightsim.config import CONF
    from weightsim.recover.options import ECConfig, RecoverConfig
    from weightsim.stages import register_configs

    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("recover")
    assert OmegaConf.to_container(cfg.ec) == asdict(ECConfig())
    top = {k: v for k, v in asdict(RecoverConfig()).items() if k not in ("teacher", "ec")}
    assert {k: cfg[k] for k in top} == top  # presets, tol, threads, progress: RecoverConfig's defaults
    assert cfg.teacher.n is None  # probes sized to the students by default


def test_probe_count_grows_with_the_students_and_few_probes_warn():
    from weightsim.errors import WeightsimWarning
    from weightsim.recover.ec import check_probes, probe_count, student_params
    from weightsim.recover.options import ECConfig

    t = synthetic_teacher(30, [12], "tanh")
    assert student_params(t, 4) == 48 * 31 + 49 == 1537  # the students: 30-48-1
    assert student_params(synthetic_teacher(12, [8, 5]), 4) == 32 * 13 + 20 * 33 + 21
    ec = ECConfig()
    assert probe_count(t, ec) == math.ceil(4 * 1537)
    assert probe_count(t, ec.replace(width_factor=2)) == math.ceil(4 * (24 * 31 + 25))
    with pytest.warns(WeightsimWarning, match="1500 probe inputs for students of 1537 parameters"):
        check_probes(1500, t, ec)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_probes(2 * 1537, t, ec)  # at the stated multiple: no warning


def test_unknown_setting_in_the_python_api_is_named():
    with pytest.raises(ConfigError, match="unknown Expand-and-Cluster setting n_student: choose from"):
        expand_and_cluster(synthetic_teacher(3, [2]), n_student=4)


def test_gaussian_problem_without_n_draws_probes_on_demand():
    from weightsim.recover.teachers import gaussian_problem

    p = gaussian_problem(5, [3], n=None, seed=2)
    assert p.x is None
    x = p.probes(40)
    assert x.shape == (40, 5) and torch.equal(x, p.probes(40))  # the same draw (seed + 1) every time
    assert torch.equal(gaussian_problem(5, [3], n=40, seed=2).x, x)


def test_a_recovered_net_far_worse_than_its_students_warns():
    from weightsim.errors import WeightsimWarning
    from weightsim.recover.ec import check_fit

    y = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    with pytest.warns(WeightsimWarning, match=r"sizes \[1\], teacher \[12\]\) has output MSE 1.1"):
        check_fit(1.1, torch.full((10,), 5e-6), y, [1], [12], 100.0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_fit(4e-4, torch.full((10,), 5e-6), y, [12], [12], 100.0)  # 80 x: within the ratio
        check_fit(1e-20, torch.full((10,), 1e-30), y, [12], [12], 100.0)  # both at float64 noise


def test_deep_prune_removes_a_used_but_redundant_neuron_below_the_last_layer():
    """A 4-3-2-1 tanh teacher written as a net with a 4th first-layer neuron: a copy of neuron 0 that
    carries half of its outgoing weight. Both copies move the output when knocked out (so the knock-out
    prune keeps them), but the net without the copy, fine-tuned, is the teacher again: it goes, and
    no teacher neuron does (each knock-out leaves an error no fine-tune removes)."""
    from weightsim.recover.ec import prune_redundant, prune_unused

    torch.set_num_threads(1)
    t = synthetic_teacher(4, [3, 2], "tanh", seed=3)
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = t(x)
        net = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2), nn.Tanh(), nn.Linear(2, 1)).double()
        net[0].weight.copy_(torch.cat([t[0].weight, t[0].weight[:1]]))
        net[0].bias.copy_(torch.cat([t[0].bias, t[0].bias[:1]]))
        net[2].weight.copy_(torch.cat([t[2].weight[:, :1] / 2, t[2].weight[:, 1:], t[2].weight[:, :1] / 2], 1))
        net[2].bias.copy_(t[2].bias)
        net[4].load_state_dict(t[4].state_dict())
        assert (net(x) - y).abs().max() < 1e-12
    kept, removed = prune_unused(net, None, x, "tanh", 1e-3)
    assert removed == [0, 0]  # each copy carries half of neuron 0's output
    # target 1e-8: 300 L-BFGS steps bring the net without a copy to ~1e-9; without a teacher neuron it stays > 1e-2
    small, _, removed, mse = prune_redundant(net, None, x, y, "tanh", 1e-8, 0.0, 300, {"optimizer": "lbfgs"})
    assert removed == [1, 0] and mse <= 1e-8
    m = recovery_metrics(t, small, x)
    assert m["recovered_frac"] == 1 and m["overhead"] == 0, m


def tiny_students():
    """A 4-3-1 tanh teacher at 200 Gaussian probes and one student of width 4x (one thread)."""
    from weightsim.recover.students import init_students

    torch.set_num_threads(1)
    t = synthetic_teacher(4, [3], "tanh", seed=1)
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        y = t(x)
    return t, x, y, init_students(4, [6], 1, "tanh", 4, seed=0)


def test_student_training_stops_at_the_median_target_and_a_fine_tune_once_it_stalls():
    """Early stops of fit, checked every record_every iterations: at the first check whose median member
    loss is <= target, and (stall) at the first check that lowered the summed loss by less than that fraction."""
    from weightsim.recover.students import train

    t, x, y, s = tiny_students()
    full = train(s, x, y, steps=300, record_every=10).history
    medians = [float(torch.tensor(v).median()) for _, v in full]
    target = medians[len(medians) // 2]  # reached half-way
    stopped = train(s, x, y, steps=300, record_every=10, target=target).history
    first = next(i for i, m in enumerate(medians) if m <= target)
    assert len(stopped) == first + 1 < len(full) and stopped == full[:first + 1]  # the same path, cut there
    sums = [sum(v) for _, v in full]
    gains = [1 - b / a for a, b in zip(sums, sums[1:])]
    stall = sorted(gains)[len(gains) // 2]  # some check gains less
    first = next(i for i, g in enumerate(gains) if g < stall) + 1
    stalled = train(s, x, y, steps=300, record_every=10, stall=stall).history
    assert len(stalled) == first + 1 < len(full) and stalled == full[:first + 1]


def test_float32_students_come_back_float64_and_fit_like_float64_ones():
    from weightsim.recover.students import train

    t, x, y, s = tiny_students()
    s32, s64 = (train(s, x, y, steps=200, dtype=d) for d in (torch.float32, torch.float64))
    assert all(v.dtype == torch.float64 for v in s32.params.values()) and s32.losses.dtype == torch.float64
    assert float(s32.losses.median()) < 1e-3 * float(y.var())  # float32 arithmetic still fits the teacher closely
    assert float(s32.losses.median()) < 100 * float(s64.losses.median()) + 1e-9
    with pytest.raises(ConfigError, match="student_dtype 'float16': choose from float64 or float32"):
        expand_and_cluster(t, x, student_dtype="float16")
    from weightsim.recover.ec import student_dtype
    from weightsim.recover.options import ECConfig
    assert student_dtype(ECConfig()) == torch.float32 and student_dtype(ECConfig(optimizer="adam")) == torch.float64
    assert student_dtype(ECConfig(optimizer="adam", student_dtype="float32")) == torch.float32
