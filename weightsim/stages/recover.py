"""The recover stage (weightsim-recover): Expand-and-Cluster on a teacher (weightsim/recover/run.py);
report.json / .csv / .md, run.json and the plots in the run directory."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from weightsim.stages.job import container, output_dir


def recover_stage(cfg: DictConfig, logger=None, notes: list[str] | None = None) -> dict:
    """Train the students, cluster them with each of ``cfg.presets`` and write the report."""
    from weightsim.recover.ec import check_options
    from weightsim.recover.options import RecoverConfig

    rc: RecoverConfig = OmegaConf.to_object(OmegaConf.merge(RecoverConfig, cfg))  # ec: an ECConfig
    for preset in rc.presets:  # every bad option fails before the teacher is built (a zoo net: read from disk)
        check_options(rc.ec, preset)  # (and before the plots' matplotlib is imported)
    from weightsim.recover.plots import plot_dendrograms, plot_losses, plot_weights
    from weightsim.recover.run import COLUMNS, PLOTS, report_lines, run_recover
    from weightsim.report.tables import markdown_table, write_run

    torch.set_num_threads(rc.threads)
    run_dir = output_dir()
    problem = instantiate(cfg.teacher)
    say = print if rc.progress else (lambda *_: None)
    result = run_recover(problem, rc.ec, rc.presets, rc.tol, progress=say)
    result.meta["config"] = container(cfg)
    result.meta["warnings"] = list(notes or [])
    run_dir.mkdir(parents=True, exist_ok=True)
    plots = [plot_dendrograms(result.clusters, run_dir / "dendrogram.png"),
             plot_weights(problem.teacher, result.nets, result.metrics, run_dir / "weights.png"),
             plot_losses(result.students.history, run_dir / "student_losses.png")]
    paths = write_run(run_dir, result.rows, result.meta, report_lines(result.rows, result.meta, rc.tol),
                      {p: PLOTS[p.name] for p in plots})
    print("\n" + markdown_table(result.rows, COLUMNS))
    print(f"\nreport: {paths['md']}  (json, csv, png beside it)")
    return {"rows": result.rows, "meta": result.meta}
