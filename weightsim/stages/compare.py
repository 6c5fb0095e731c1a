"""The compare stage (weightsim-compare): every compare measure on a zoo (weightsim/compare/run.py);
HTT's report files with every measure, the pairs (compare.csv), their summary (summary.csv),
cka.json and the plots in the run directory."""

from __future__ import annotations

import json

from omegaconf import DictConfig

from weightsim.stages.job import container, output_dir

# the plots a compare run may write: file name -> what it shows (report.md's last line)
PLOTS = {"cmc_measures.png": "the CMC of every measure, one panel per layer",
         "eps_curves.png": "s(eps) per layer for each relation",
         "cka_layers.png": "mean layer x layer CKA of the same-task pairs"}


def compare_stage(cfg: DictConfig, logger=None, notes: list[str] | None = None) -> dict:
    """run_compare on ``cfg.zoo_dir``; its report files and plots in the job's run directory."""
    from weightsim.chains import ChainOptions
    from weightsim.compare.run import CompareConfig, run_compare
    from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
    from weightsim.trainer import TrainerConfig

    run_dir = output_dir()
    result = run_compare(cfg.zoo_dir, CompareConfig(**container(cfg.compare)), ProtocolConfig(**container(cfg.protocol)),
                         ClassifierConfig(**container(cfg.classifier)), ChainOptions(**container(cfg.chains)), cfg.seed,
                         cfg.progress, cfg.eval_zoo_dir, container(cfg.measure), TrainerConfig(**container(cfg.trainer)))
    from weightsim.compare.plots import layer_labels, plot_cka_heatmap, plot_cmc_measures, plot_eps_curves
    from weightsim.measures.activations import layer_names
    from weightsim.report import markdown_table, write_report
    from weightsim.zoo.view import Zoo

    result["meta"]["config"] = container(cfg)
    result["meta"]["warnings"] = list(notes or [])
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = next((cfg.measure[n] for n in ("cka", "match") if n in cfg.compare.measures), cfg.measure.cka)
    names = layer_names(Zoo(cfg.zoo_dir).template, probe.where)  # every activation layer: layer k = names[k-1]
    labels = layer_labels(names)
    plots = []
    if result["cmc"]:  # with measure.<name>.layers a subset, an activation measure's k-th layer: its k-th chosen
        plots.append(plot_cmc_measures(result["cmc"], run_dir / "cmc_measures.png",
                                       None if probe.layers else names))
    if any(r["measure"] == "match" for r in result["summary"]):
        plots.append(plot_eps_curves(result["summary"], run_dir / "eps_curves.png", labels))
    if result["cka"]:
        (run_dir / "cka.json").write_text(json.dumps(result["cka"], indent=1))
        plots.append(plot_cka_heatmap(result["cka"]["matrix"], result["cka"]["layers"],
                                      result["cka"]["identification"], run_dir / "cka_layers.png", labels))
    paths = write_report(run_dir, result, title="weightsim compare", plots={p: PLOTS[p.name] for p in plots},
                         tables={"compare": result["pairs"], "summary": result["summary"]})
    print("\n" + markdown_table(result["rows"]))
    print(f"\nreport: {paths['md']}  (compare.csv: the pairs, summary.csv, plots beside it)")
    return result
