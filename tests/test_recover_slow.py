"""Expand-and-Cluster acceptance on planted teachers (slow: 0.5-2 min each on one core).

Teachers of weightsim.recover.synthetic_teacher (unit directions x U[1.5, 2.5], biases U[-|w|, |w|],
outgoing +-U[0.5, 1.5]) probed at the default count of inputs x ~ N(0, I) (4 x one student's parameters); N = 10 students of width 4x, robust preset.
Every teacher neuron recovered (abs-cosine distance < 1e-3), size overhead <= 10 %, aligned relative
weight error < 1e-3."""

from __future__ import annotations

import pytest
import torch

from weightsim.recover import expand_and_cluster, gaussian_problem, recovery_metrics
from weightsim.recover.ec import expand, probe_count
from weightsim.recover.options import ECConfig


@pytest.mark.slow
@pytest.mark.parametrize("activation, d_in, widths", [("tanh", 20, [8]), ("softplus", 20, [8]), ("relu", 20, [8]),
                                                      ("tanh", 10, [6, 4])])
def test_planted_teacher_is_recovered(activation, d_in, widths):
    torch.set_num_threads(1)
    p = gaussian_problem(d_in, widths, activation, seed=0)
    x = p.probes(probe_count(p.teacher, ECConfig()))  # the default probe count: 4 x one student's parameters
    students = expand(p.teacher, x, progress=lambda *_: None)
    rec = expand_and_cluster(p.teacher, x, students=students, preset="robust", progress=lambda *_: None)
    m = recovery_metrics(p.teacher, rec.net, x)
    assert m["recovered_frac"] == 1.0 and m["max_nearest_dist"] < 1e-3, m
    assert m["overhead"] <= 0.10 and m["weight_rel_err"] < 1e-3, m
    assert rec.sizes == widths  # the layer sizes themselves
