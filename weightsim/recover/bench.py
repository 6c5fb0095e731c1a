"""A benchmark of Expand-and-Cluster over random teachers (docs/recover.md, "Benchmark").

Teachers are drawn per class (hidden layers x activation): for each class, ``configs`` random
architectures (input size and every hidden width uniform in ``D_IN`` and ``WIDTH``) and ``seeds``
teacher seeds each (the seed draws the teacher's weights and its probes). One teacher: its students
are trained once (``expand``), then clustered with every preset; a preset *succeeds* on it when
every teacher neuron is within ``tol`` (abs-cosine distance), the size overhead is at most 10 % and
the aligned relative weight error is below 1e-3.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from weightsim.errors import ConfigError
from weightsim.recover.ec import check_options, expand, expand_and_cluster, probe_count
from weightsim.recover.metrics import recovery_metrics
from weightsim.recover.options import ECConfig
from weightsim.recover.teachers import gaussian_problem

D_IN = (8, 40)  # input size, inclusive
WIDTH = (4, 24)  # every hidden width, inclusive
ACTIVATIONS = ("tanh", "softplus", "relu", "gelu")
DEPTHS = (1, 2)  # hidden layers
MAX_OVERHEAD = 0.10
MAX_WEIGHT_ERR = 1e-3


@dataclass(frozen=True)
class TeacherSpec:
    depth: int
    activation: str
    d_in: int
    widths: tuple[int, ...]
    seed: int

    @property
    def name(self) -> str:
        return f"{self.activation} {'-'.join(map(str, (self.d_in, *self.widths, 1)))} seed {self.seed}"

    @property
    def cls(self) -> str:
        return f"{self.depth}x {self.activation}"


def draw_specs(configs: int = 3, seeds: int = 3, bench_seed: int = 0) -> list[TeacherSpec]:
    """configs x seeds teachers for each (depth, activation): len = 8 * configs * seeds. An
    architecture whose neurons cannot be drawn apart (synthetic_teacher's |cos| < 0.8 rule, e.g. 24
    directions in 8 dimensions) is redrawn, so the sizes are uniform among drawable ones."""
    rng = np.random.default_rng(bench_seed)
    specs = []
    for depth in DEPTHS:
        for act in ACTIVATIONS:
            for _ in range(configs):
                while True:
                    d_in = int(rng.integers(D_IN[0], D_IN[1] + 1))
                    widths = tuple(int(w) for w in rng.integers(WIDTH[0], WIDTH[1] + 1, size=depth))
                    try:
                        for s in range(seeds):
                            gaussian_problem(d_in, widths, act, seed=1000 * s + 1, n=1)
                        break
                    except ConfigError:
                        continue
                specs += [TeacherSpec(depth, act, d_in, widths, 1000 * s + 1) for s in range(seeds)]
    return specs


def run_teacher(spec: TeacherSpec, ec: ECConfig, presets: tuple[str, ...] = ("robust", "reference"),
                tol: float = 1e-3) -> list[dict]:
    """One row per preset: the spec, recovered fraction, overhead, weight error, success, seconds
    (the students' training counted in every preset's time)."""
    for preset in presets:  # a bad setting fails before the students train
        check_options(ec, preset)
    problem = gaussian_problem(spec.d_in, spec.widths, spec.activation, seed=spec.seed)
    x = problem.probes(probe_count(problem.teacher, ec))
    t0 = time.perf_counter()
    students = expand(problem.teacher, x, ec, progress=lambda *_: None)
    t_students = time.perf_counter() - t0
    rows = []
    for preset in presets:
        t1 = time.perf_counter()
        rec = expand_and_cluster(problem.teacher, x, ec, students=students, preset=preset, progress=lambda *_: None)
        m = recovery_metrics(problem.teacher, rec.net, x, tol=tol)
        ok = m["recovered_frac"] == 1.0 and m["overhead"] <= MAX_OVERHEAD and m["weight_rel_err"] < MAX_WEIGHT_ERR
        rows.append({**asdict(spec), "widths": "-".join(map(str, spec.widths)), "class": spec.cls, "teacher": spec.name,
                     "preset": preset, "optimizer": ec.optimizer, "probes": len(x),
                     "sizes": "-".join(map(str, m["sizes"])), "recovered_frac": m["recovered_frac"],
                     "overhead": m["overhead"], "weight_rel_err": m["weight_rel_err"], "final_mse": rec.log["final_mse"],
                     "student_mse_median": float(students.losses.median()), "success": bool(ok),
                     "seconds": t_students + time.perf_counter() - t1})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per (class, preset, optimizer): teachers, successes, success rate, mean recovered fraction and
    overhead, median seconds."""
    keys = sorted({(r["class"], r["preset"], r["optimizer"]) for r in rows})
    out = []
    for cls, preset, opt in keys:
        sel = [r for r in rows if (r["class"], r["preset"], r["optimizer"]) == (cls, preset, opt)]
        ok = [str(r["success"]) in ("True", "true", "1") for r in sel]
        out.append({"class": cls, "preset": preset, "optimizer": opt, "teachers": len(sel), "successes": sum(ok),
                    "success_rate": sum(ok) / len(sel),
                    "recovered_frac": float(np.mean([float(r["recovered_frac"]) for r in sel])),
                    "overhead": float(np.mean([float(r["overhead"]) for r in sel])),
                    "median_seconds": float(np.median([float(r["seconds"]) for r in sel]))})
    return out
