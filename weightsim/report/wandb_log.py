"""wandb runs of the CLI jobs (docs/wandb.md): one run per job, named, grouped and tagged from its
Hydra choices; a zoo job's nets and an HTT job's decisions as summary values, so they are columns
of the runs table. Nothing here is imported unless ``logger=wandb``."""

from __future__ import annotations

import math
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from weightsim.paths import CONF

STAGES = ("zoo", "htt", "run", "compare")  # weightsim-zoo, -htt, -run, -compare
NAME_GROUPS = ("experiment", "scale", "dataset", "arch")  # the choices that name a run, in this order


def is_wandb(logger) -> bool:
    return type(logger).__name__ == "WandbLogger"


def arch_label(name: str | None, config: dict) -> str:
    """``name`` plus the arch options that differ from conf/arch/<name>.yaml, e.g. ``plainnet5(norm=none)``:
    two zoos of one arch file with other options get other labels (options the YAML leaves null, filled
    from the data, do not count)."""
    path = CONF / "arch" / f"{name}.yaml"
    default = OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else {}
    changed = [f"{k}={v}" for k, v in config.items()
               if not k.startswith("_") and default.get(k) is not None and v != default.get(k)]
    return f"{name}({','.join(changed)})" if changed else str(name)


def zoo_arch(zoo_dir: str | Path) -> tuple[str, str]:
    """(arch name, arch label) of the nets a zoo holds, from its header."""
    from weightsim.zoo.store import ZooReader

    arch = ZooReader(zoo_dir).head["arch"]
    return arch["name"], arch_label(arch["name"], arch["config"])


def seed_block(first: int, count: int) -> str:
    """Seeds [first, first + count) as ``s<first>-<last>``, e.g. ``s0-29``."""
    return f"s{first}-{first + count - 1}"


def job_zoo(cfg: DictConfig, stage: str, choices: dict) -> dict:
    """What names the job: dataset, arch name, arch label and seed block of the zoo it writes (from
    the config) or, for an HTT job, of the zoo it reads (from the zoo, whatever the choices say)."""
    if stage not in ("htt", "compare"):  # (htt and compare read a zoo: it names them)
        arch = OmegaConf.to_container(cfg.arch, resolve=True)
        return {"dataset": choices.get("dataset"), "arch": choices.get("arch"),
                "label": arch_label(choices.get("arch"), arch),
                "block": seed_block(int(cfg.zoo.seed_offset), int(cfg.zoo.seeds))}
    from weightsim.zoo.store import ZooReader

    zoo = ZooReader(cfg.zoo_dir)
    seeds = sorted({r["seed"] for r in zoo.rows}) or [0]
    name, label = zoo_arch(cfg.zoo_dir)
    return {"dataset": zoo.head["dataset"]["name"], "arch": name, "label": label,
            "block": seed_block(seeds[0], seeds[-1] - seeds[0] + 1)}


def loaded_choices(runtime: dict) -> dict:
    """Hydra's runtime choices without its own groups and without the choices that loaded nothing:
    an optional group's interpolated name (``size: ${dataset}_${scale}`` gives ``digits_None`` when
    no scale is chosen) is a choice only where conf/<group>/<name>.yaml exists. The groups without a
    conf/ folder (zoo, chains, protocol, classifier, compare) are structured configs: kept as they are."""
    def loaded(group: str, name: str) -> bool:
        return not (CONF / group).is_dir() or (CONF / group / f"{name}.yaml").exists()

    return {k: v for k, v in runtime.items() if not k.startswith("hydra") and v is not None and loaded(k, v)}


def run_identity(cfg: DictConfig, stage: str, runtime_choices: dict, overrides: list[str],
                 job_num: int | None = None) -> dict:
    """wandb.init arguments of this job: name, group, tags, job_type and the resolved config.
    ``runtime_choices``, ``overrides``: the job's Hydra choices and command-line overrides;
    ``job_num``: its number in a multirun (None: a single run).

    group = <experiment>-[<scale>-]<dataset>-<arch label>: the seed-block jobs that write one zoo and
    the HTT jobs on it; name = <stage>-<group>-<seed block>, then -on-<eval zoo's arch label> for a
    cross-network run and -j<num> in a multirun (job number)."""
    choices = loaded_choices(runtime_choices)
    experiment = choices.get("experiment") or "adhoc"
    zoo = job_zoo(cfg, stage, choices)
    group = "-".join(str(p) for p in (experiment, choices.get("scale"), zoo["dataset"], zoo["label"]) if p)
    name = f"{stage}-{group}-{zoo['block']}"
    cross = stage != "zoo" and cfg.get("eval_zoo_dir")
    if cross:  # cross-network: the zoo tested on, by the arch it holds
        name += f"-on-{zoo_arch(cfg.eval_zoo_dir)[1]}"
    if job_num is not None:
        name += f"-j{job_num}"
    tags = [f"{g}:{v}" for g, v in (("experiment", experiment), ("scale", choices.get("scale")),
                                     ("dataset", zoo["dataset"]), ("arch", zoo["arch"]),
                                     ("stage", stage)) if v] + (["cross"] if cross else [])
    config = {**OmegaConf.to_container(cfg, resolve=True), "stage": stage, "choices": choices,
              "arch_label": zoo["label"], "seed_block": zoo["block"], "overrides": list(overrides)}
    return {"name": name, "group": group, "tags": [t[:64] for t in tags], "job_type": stage, "config": config}


def logger_args(cfg: DictConfig, stage: str, runtime_choices: dict, overrides: list[str],
                job_num: int | None = None) -> dict:
    """Extra constructor arguments of ``cfg.logger``: the run identity (``run_identity``) when it is a
    WandbLogger (values set in the logger config, e.g. ``+logger.group=mine``, win); nothing for other
    loggers."""
    if not get_class(cfg.logger._target_).__name__ == "WandbLogger":
        return {}
    identity = run_identity(cfg, stage, runtime_choices, overrides, job_num)
    return {k: v for k, v in identity.items() if k not in cfg.logger}


# -- zoo jobs --------------------------------------------------------------------------------------
def zoo_summary(zoo_dir: str | Path, seeds: range) -> tuple[dict, dict]:
    """(summary scalars, per-net columns) of the nets of ``seeds`` in the zoo at ``zoo_dir``:
    zoo/nets, zoo/nets_on_disk, zoo/tasks, zoo/task_<t>/nets, zoo/diverged, zoo/{train,test}_acc_mean."""
    from weightsim.zoo.store import ZooReader

    zoo = ZooReader(zoo_dir)
    rows = [r for r in zoo.rows if r["seed"] in seeds]
    tasks = sorted({r["task"] for r in rows})
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    summary = {"zoo/nets": len(rows), "zoo/nets_on_disk": len(zoo.rows), "zoo/tasks": len(tasks),
               **{f"zoo/task_{t}/nets": sum(r["task"] == t for r in rows) for t in tasks},
               "zoo/diverged": sum(bool(r["diverged"]) for r in rows),
               "zoo/train_acc_mean": mean([r["train_acc"] for r in rows]),
               "zoo/test_acc_mean": mean([r["test_acc"] for r in rows])}
    config = {"zoo_arch": zoo_arch(zoo_dir)[1], "zoo_dataset": zoo.head["dataset"]["name"],
              "zoo_config_hash": zoo.head.get("config_hash")}
    return summary, {"rows": rows, "config": config}


def log_zoo(logger, zoo_dir: str | Path, seeds: range) -> None:
    """A zoo job's nets to its wandb run: counts and diverged (summary), the train/test accuracies of
    the task nets as histograms, and one table row per net."""
    if not is_wandb(logger):
        return
    import wandb

    summary, nets = zoo_summary(zoo_dir, seeds)
    run = logger.experiment
    run.config.update(nets["config"], allow_val_change=True)
    columns = ["task", "seed", "role", "train_acc", "test_acc", "final_loss", "diverged"]
    run.log({"zoo/train_acc": wandb.Histogram([r["train_acc"] for r in nets["rows"]]),
             "zoo/test_acc": wandb.Histogram([r["test_acc"] for r in nets["rows"]]),
             "zoo/net_table": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in nets["rows"]])})
    run.summary.update(summary)


# -- HTT jobs --------------------------------------------------------------------------------------
ROW_VALUES = ("accuracy", "accuracy_mean", "accuracy_sd", "effect_size", "error", "error_upper_bound", "p_value")


def htt_summary(rows: list[dict]) -> dict:
    """Summary scalars of the report rows: <protocol>/<measure>/chain_<l>/<value> and
    <protocol>/<measure>/all/<value> for value in accuracy, accuracy_mean, accuracy_sd (the repeats'
    sd), effect_size, error, error_upper_bound, p_value (each where it is a finite number), decision
    (accept = 1, reject = 0), decision_bound; ``decision`` = 1 when the first measure
    (protocol.measures[0], chain_gram by default) accepts H0 under every protocol."""
    out = {}
    for r in rows:
        prefix = f"{r['protocol']}/{r['measure']}/" + ("all" if r["chain"] == "all" else f"chain_{r['chain']}")
        for key in ROW_VALUES:
            v = r.get(key)
            if v is not None and not (isinstance(v, float) and not math.isfinite(v)):
                out[f"{prefix}/{key}"] = float(v)
        out[f"{prefix}/decision"] = int(r["decision"] == "accept")
        out[f"{prefix}/decision_bound"] = int(r["decision_bound"] == "accept")
    if rows:
        first = rows[0]["measure"]
        overall = [r for r in rows if r["chain"] == "all" and r["measure"] == first]
        out["decision"] = int(all(r["decision"] == "accept" for r in overall))
        out["decision_measure"] = first
    return out


def zoo_labels(meta: dict) -> dict:
    """Run config for grouping HTT runs: the arch labels of the train zoo and the eval zoo (the same
    zoo unless cross-network), and whether it is a cross-network run."""
    from weightsim.zoo.store import ZooReader

    return {"zoo_arch": zoo_arch(meta["zoo_dir"])[1], "eval_zoo_arch": zoo_arch(meta["eval_zoo_dir"])[1],
            "zoo_dataset": ZooReader(meta["zoo_dir"]).head["dataset"]["name"],
            "cross": Path(meta["zoo_dir"]).resolve() != Path(meta["eval_zoo_dir"]).resolve()}


def log_htt(logger, result: dict, plots: list[Path]) -> None:
    """An HTT job's result to its wandb run: the summary scalars, the report table and the plots."""
    if not is_wandb(logger):
        return
    import wandb

    rows = result["rows"]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda k, v: str(v) if k == "chain" else v  # noqa: E731  (a column holds 1, 2, ... and "all")
    run = logger.experiment
    if "zoo_dir" in result["meta"]:  # run_htt's meta names its zoos; a result put together by hand may not
        run.config.update(zoo_labels(result["meta"]), allow_val_change=True)
    fits = result["meta"].get("fits") or []  # one table, not a one-point series per fit
    run.log({"report": wandb.Table(columns=keys, data=[[cell(k, r.get(k)) for k in keys] for r in rows]),
             **({"classifier_fits": wandb.Table(columns=list(fits[0]), data=[list(f.values()) for f in fits])}
                if fits else {}),
             **{p.stem: wandb.Image(str(p)) for p in plots}})
    run.summary.update(htt_summary(rows))
