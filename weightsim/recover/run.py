"""One Expand-and-Cluster run on a teacher problem: N students trained once, clustered with each
preset, the metrics as report rows (one per hidden layer and one overall) and the report's text.
The weightsim-recover stage (weightsim/stages/recover.py) writes the files and the plots."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from torch import nn

from weightsim.recover.ec import check_options, expand, expand_and_cluster, probe_count
from weightsim.recover.metrics import recovery_metrics, teacher_in_students
from weightsim.recover.options import ECConfig
from weightsim.recover.students import Students
from weightsim.recover.teachers import layers
from weightsim.report.tables import markdown_table

COLUMNS = ["teacher", "preset", "layer", "teacher_size", "size", "overhead", "recovered_frac", "max_nearest_dist",
           "weight_rel_err", "excess", "preact_recovered_frac", "final_mse", "n_students", "width_factor", "seconds"]
# the plots a run writes: file name -> what it shows (report.md's last line)
PLOTS = {"dendrogram.png": "linkage and cut per preset and layer",
         "weights.png": "teacher vs recovered first-layer weights",
         "student_losses.png": "each student's training loss"}


@dataclass
class Recovery:
    """A run's result: report rows, meta (run.json) and what the plots draw: the trained students,
    and per preset the recovered net, its metrics and its clusters."""

    rows: list[dict]
    meta: dict
    students: Students
    nets: dict[str, nn.Module]
    metrics: dict[str, dict]
    clusters: dict[str, list]


def rows_of(name: str, preset: str, m: dict, rec_log: dict, ec: ECConfig, seconds: float, act: str) -> list[dict]:
    """One row per hidden layer and one overall row ("all")."""
    common = {"teacher": name, "activation": act, "preset": preset, "n_students": ec.n_students,
              "width_factor": ec.width_factor, "final_mse": rec_log["final_mse"], "seconds": seconds}
    out = []
    for l, e in enumerate(m["layers"]):
        out.append({**common, "layer": l + 1, "teacher_size": e["teacher_size"], "size": e["size"],
                    "overhead": e["size"] / e["teacher_size"] - 1, "recovered_frac": e["recovered_frac"],
                    "max_nearest_dist": max(e["nearest_dist"]), "weight_rel_err": e["weight_rel_err"],
                    "excess": e["excess"]})
    out.append({**common, "layer": "all", "teacher_size": sum(m["teacher_sizes"]), "size": sum(m["sizes"]),
                **{k: m[k] for k in ("overhead", "recovered_frac", "max_nearest_dist", "weight_rel_err", "excess",
                                     "preact_recovered_frac")}})
    return out


def run_recover(problem, ec: ECConfig, presets: list[str], tol: float, progress=print) -> Recovery:
    """Train ``ec.n_students`` students on ``problem`` (a teacher problem of recover/teachers.py; its
    probe inputs ``problem.x`` (n, d_in) are drawn here when it has none), cluster them with each of
    ``presets`` and measure each recovered net against the teacher at tolerance ``tol``. Every bad
    option fails before any training. meta's "config" and "warnings" are left for the caller."""
    for preset in presets:
        check_options(ec, preset)
    problem.x = problem.probes(probe_count(problem.teacher, ec))  # teacher.n null: sized to the students
    _, act = layers(problem.teacher)
    act = ec.activation or act
    ec = ec.replace(activation=act)
    t0 = time.perf_counter()
    students = expand(problem.teacher, problem.x, ec, progress=progress)
    t_students = time.perf_counter() - t0
    rows, metrics, nets, clusters, logs = [], {}, {}, {}, {}
    for preset in presets:
        t1 = time.perf_counter()
        rec = expand_and_cluster(problem.teacher, problem.x, ec, students=students, preset=preset, progress=progress)
        seconds = t_students + time.perf_counter() - t1
        m = recovery_metrics(problem.teacher, rec.net, problem.x, tol=tol)
        rows += rows_of(problem.name, preset, m, rec.log, ec, seconds, act)
        metrics[preset], nets[preset], clusters[preset] = m, rec.net, rec.clusters
        logs[preset] = {k: v for k, v in rec.log.items() if k != "student_history"}
        logs[preset]["nearest_dist"] = m["nearest_dist"]
    inside = teacher_in_students(problem.teacher, *students.layer(0), problem.x, tol)
    meta = {"teacher": problem.name, "activation": act, "probe_inputs": len(problem.x),
            "student_seconds": t_students, "student_mse": students.losses.tolist(), "teacher_in_students": inside,
            "config": None, "warnings": [], "runs": logs}
    return Recovery(rows, meta, students, nets, metrics, clusters)


def report_lines(rows: list[dict], meta: dict, tol: float) -> list[str]:
    """report.md of a run, up to its plots: the table, what each column means, warnings, the run's facts
    and where the teacher's neurons lie among the trained students'."""
    md = [f"# Expand-and-Cluster: {meta['teacher']}", "", markdown_table(rows, COLUMNS), "",
          f"- `teacher_size` / `size`: hidden neurons of the teacher / of the recovered net; `overhead` = size / "
          f"teacher_size - 1.",
          f"- `max_nearest_dist`: largest over teacher neurons of 1 - max |cos| to a recovered neuron ([w; b], "
          f"inputs constant over the probe data folded into b); `recovered_frac`: share below tol = {tol:g}.",
          "- `weight_rel_err`: largest relative error ||w' - w|| / ||w|| of the matched (sign-aligned; ReLU: unit "
          "norm) neurons and of the output weights; a teacher neuron without partner counts 1.",
          "- `preact_recovered_frac` (overall row): share of first-layer teacher neurons whose pre-activation over "
          "the probe inputs has |cos| > 1 - tol with a recovered neuron's (function space, not weights).",
          "- `excess`: recovered neurons not matched to a teacher neuron within tol; `final_mse`: the recovered "
          "net's train MSE to the teacher; `seconds`: student training + this preset's clustering and fine-tuning.",
          ""]
    if meta["warnings"]:
        md += ["## Warnings", ""] + [f"- {w}" for w in meta["warnings"]] + [""]
    md += ["## Run", "", f"- probe inputs: {meta['probe_inputs']}",
           f"- student training: {meta['student_seconds']:.1f}s"]
    md += [f"- {p}: {json.dumps({k: v for k, v in r.items() if k in ('layers', 'sizes')})}"
           for p, r in meta["runs"].items()]
    inside = meta["teacher_in_students"]
    md += ["", "Teacher neurons (first hidden layer) in the trained students, before clustering: median over "
           "students of the abs-cosine distance to the nearest student neuron, students holding it within tol, "
           "share of probe inputs where its pre-activation is > 0:", "",
           markdown_table([{"neuron": i, "median_dist": d, "students_within_tol": k, "active_share": a}
                           for i, (d, k, a) in enumerate(zip(inside["median_dist"], inside["students_within_tol"],
                                                             inside["active_share"]))],
                          ["neuron", "median_dist", "students_within_tol", "active_share"])]
    md += ["", f"- student train MSE: {', '.join(f'{v:.1e}' for v in sorted(meta['student_mse']))}"]
    return md
