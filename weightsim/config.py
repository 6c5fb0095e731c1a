"""The Hydra config tree: where conf/ lies, which choices each config group offers, the checks of a
command line before Hydra composes it, and the --help pages, so that the CLI, the benchmarks and
anyone else read it without importing the CLI. It imports nothing of the library.

Defaults live in one place each: the data and the nets in conf/ (YAML with ``_target_``); the
settings of the zoo, the chains, the weight classifier, the protocol, compare, recover, the
Trainers and each measure (``measure/<name>``) in their dataclasses, which the stages hand to Hydra
as the structured configs of their groups (``weightsim.stages.register_configs``: type-checked, and
with no YAML copy to drift).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from weightsim.paths import CONF


def structured_choices(group: str) -> list[str]:
    """The structured configs stored in Hydra's ConfigStore for ``group`` (the stages store them:
    weightsim.stages.register_configs)."""
    try:
        return [name.removesuffix(".yaml") for name in ConfigStore.instance().list(group)]
    except OSError:  # no structured config in this group
        return []


def choices(group: str) -> list[str]:
    """The options of config group ``group`` (e.g. "arch"): conf/<group>/*.yaml and the structured
    configs stored for that group, sorted. Files named ``_*.yaml`` are parts that choices include,
    not choices."""
    yaml = {p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_")}
    return sorted(yaml | set(structured_choices(group)))


# -- fail fast: every setting checked before any work --------------------------------------------
# the launchers of the ``[sweep]`` extra: conf/launcher choice -> the Hydra plugin module it needs
LAUNCHER_PLUGINS = {"joblib": "hydra_plugins.hydra_joblib_launcher",
                    "slurm": "hydra_plugins.hydra_submitit_launcher",
                    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
                    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher"}
SWEEP_EXTRA = "pip install 'weightsim[sweep]'"


def check_launcher(argv: list[str]) -> None:
    """A launcher of the ``[sweep]`` extra chosen without the extra installed: one line naming the
    install command (instead of Hydra's "Could not find 'hydra/launcher/joblib'")."""
    import importlib.util

    from weightsim.errors import ConfigError

    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key not in ("launcher", "hydra/launcher"):
            continue
        for v in value.split(","):
            module = LAUNCHER_PLUGINS.get(v)
            if module and importlib.util.find_spec(module) is None:
                raise ConfigError(f"{key}={v} needs the launcher plugins of the [sweep] extra: {SWEEP_EXTRA}")


# weightsim-compare's keys that moved into a measure's own group (measure/<name>, read by weightsim-htt too)
MOVED_KEYS = {**{f"compare.{k}": f"measure.cka.{k} and measure.match.{k}"
                 for k in ("probe", "probe_seed", "data_dir", "where", "layers", "budget_mb")},
              "compare.eps": "measure.match.eps", "compare.eps_grid": "measure.match.eps_grid",
              "compare.restarts": "measure.weight_matching.restarts",
              "compare.max_iter": "measure.weight_matching.max_iter"}


def check_moved_keys(argv: list[str]) -> None:
    """A key that moved (``MOVED_KEYS``): one line naming the new key(s) instead of Hydra's "not in struct"."""
    from weightsim.errors import ConfigError

    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key in MOVED_KEYS:
            raise ConfigError(f"{key} moved to the measure's own settings: set {MOVED_KEYS[key]} "
                              f"(e.g. {MOVED_KEYS[key].split(' and ')[0]}={value})")


def compose_error_line(e: BaseException) -> str:
    """Hydra's multi-line composition error (a value of the wrong type, a key not in the config, an
    unparsable override) as one line: what Hydra said, the key, and the fix it suggested."""
    cause = e.__cause__
    lines = [ln.strip().rstrip(".") for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Config search path", "provider=", "Set the environment"))]
    if "Available options" in " ".join(lines):  # a group choice that does not exist: list the choices
        i = next(k for k, ln in enumerate(lines) if ln.startswith("Available options"))
        lines = lines[:i] + [f"{lines[i].rstrip(':')}: {', '.join(lines[i + 1:])}"]
    head, rest = lines[0] if lines else type(e).__name__, lines[1:]
    if cause is not None:
        said = str(cause).splitlines()[0].strip().rstrip(".")
        key = getattr(cause, "full_key", None)
        kind = said.rsplit(" ", 1)[-1]
        want = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(kind)
        fix = f"set {key} to {want}" if key and want else None
        return ": ".join([head, said, *[r[0].lower() + r[1:] for r in rest], *([fix] if fix else [])])
    return ": ".join([head, *rest])


def check_composition(argv: list[str], config_name: str = "config") -> None:
    """Compose the config as Hydra will for these overrides (each value of a multirun sweep once),
    without running anything: a composition error becomes a ConfigError with one line. Command
    lines with Hydra flags (--help, --cfg, --shell-completion, ...) are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from weightsim.errors import ConfigError

    flags = [a for a in argv if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags):
        return
    check_moved_keys(argv)
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        for job in sweep_points(overrides) if flags else [overrides]:
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                compose(config_name, overrides=job, return_hydra_config=True)
    except HydraException as e:
        raise ConfigError(compose_error_line(e)) from e
    finally:
        GlobalHydra.instance().clear()


def sweep_points(overrides: list[str]) -> list[list[str]]:
    """The override lists that together take every value of every sweep override once (the others
    at their first value): enough to find a value Hydra cannot compose, far fewer than the jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override():
            values.append([o.input_line])
            continue
        try:
            values.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        except Exception:  # noqa: BLE001  (an interval sweep has no values to list: left to Hydra)
            continue
    points = [[vs[0] for vs in values]]
    for i, vs in enumerate(values):
        points += [[*(w[0] for w in values[:i]), v, *(w[0] for w in values[i + 1:])] for v in vs[1:]]
    return points


# -- --help per app ------------------------------------------------------------------------------
# app -> (what it does, the config groups it reads, one example); Hydra prints it for --help
APPS = {
    "zoo": ("train the missing nets of a model zoo: zoo.seeds seeds of one net (arch) on each task of a dataset, "
            "trained in populations and resumable (docs/zoo.md).\n"
            "weightsim-zoo verify zoo_dir=DIR checks every file of a zoo against its manifest.",
            ("dataset", "arch", "zoo", "trainer", "logger", "launcher", "experiment", "scale"),
            "weightsim-zoo dataset=digits arch=mlp zoo.seeds=50 zoo_dir=zoos/digits-mlp"),
    "htt": ("hypothesis-training-testing on a zoo (zoo_dir=DIR; eval_zoo_dir=DIR to test on another zoo): "
            "chain features, a weight classifier per chain, the classification and retrieval protocols; "
            "report.md / .json / .csv and plots in the run directory (docs/htt.md).",
            ("protocol", "classifier", "chains", "trainer", "logger", "launcher"),
            "weightsim-htt zoo_dir=zoos/digits-mlp protocol.alpha=0.01 protocol.queries=10"),
    "run": ("train a zoo, then test it with hypothesis-training-testing, in one run directory "
            "(weightsim-zoo, then weightsim-htt on its zoo; README.md).",
            ("dataset", "arch", "zoo", "trainer", "chains", "classifier", "protocol", "logger", "launcher", "experiment",
             "scale"),
            "weightsim-run zoo.seeds=50 arch.hidden=64 protocol.alpha=0.01"),
    "compare": ("every compare measure on a zoo (zoo_dir=DIR): CKA, s(eps) matching, weight matching and the "
                "chain-Gram distance, through the HTT protocols and pair by pair (docs/compare.md); each measure's "
                "own settings are measure.<name>.* (e.g. measure.cka.probe=128), read by weightsim-htt too.",
                ("compare", "protocol", "classifier", "chains", "trainer", "logger", "launcher"),
                "weightsim-compare zoo_dir=zoos/digits-mlp 'compare.measures=[cka,weight_matching]'"),
    "import": ("nets trained elsewhere as an ordinary zoo: a folder of checkpoints (.safetensors, or .pt / .pth "
               "state dicts), an index CSV (file,task,seed, role optional) and the architecture they were trained "
               "as; keys are mapped by order and shape where names differ (docs/zoo.md).",
               ("arch",),
               "weightsim-zoo import folder=ckpts arch=mlp arch.hidden=16 arch.depth=3 zoo_dir=zoos/mine"),
    "recover": ("Expand-and-Cluster: recover a teacher net's hidden neurons from students trained on its outputs "
                "(docs/recover.md).",
                ("teacher",),
                "weightsim-recover teacher.activation=softplus ec.width_factor=2"),
}


def program(app: str) -> str:
    """The command of app ``app``: ``weightsim-<app>``, but ``weightsim-zoo import`` for import."""
    return "weightsim-zoo import" if app == "import" else f"weightsim-{app}"


def help_text(app: str) -> str:
    """The --help page of ``weightsim-<app>`` (a string.Template for Hydra: ``$`` written ``$$``)."""
    what, groups, example = APPS[app]
    prog = program(app)
    width = max(map(len, groups))
    rows = "\n".join(f"  {g:<{width}}  {', '.join(choices(g))}" for g in groups)
    return (f"{prog}: {what}\n\n"
            f"Usage: {prog} [group=choice ...] [key=value ...]   (-m: a multirun over comma lists)\n\n"
            f"Config groups it reads (group=choice):\n{rows}\n\n"
            f"Every setting is key=value, as in the example below; {prog} --cfg job prints them all.\n\nExample:\n  {example}\n\n"
            f"Tab completion of groups and keys (bash; zsh and fish likewise):\n"
            f"  eval \"$$({prog} -sc install=bash)\"\n"
            f"Hydra's own flags: {prog} --hydra-help")


def register_help(app: str) -> str:
    """Store app ``app``'s --help page as the Hydra config ``hydra/help=weightsim_<app>``; returns
    that override."""
    store = ConfigStore.instance()
    store.store(group="hydra/help", name=f"weightsim_{app}", provider="weightsim",
                node={"app_name": f"weightsim-{app}", "header": "", "footer": "", "template": help_text(app)})
    return f"hydra/help=weightsim_{app}"
