"""The Hydra config tree: where conf/ lies, which choices each config group offers, and the
structured configs, so that the CLI, the benchmarks and anyone else read it without importing the CLI.

Defaults live in one place each: the data and the nets in conf/ (YAML with ``_target_``); the
settings of the zoo, the chains, the weight classifier and the protocol in their dataclasses,
which ``register_configs`` hands to Hydra as the structured configs of their groups (type-checked,
and with no YAML copy to drift).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore

CONF = Path(__file__).parent / "conf"  # installed wheel
if not CONF.is_dir():
    CONF = Path(__file__).parent.parent / "conf"  # source checkout / editable install


def structured_configs() -> dict[tuple[str, str], type]:
    """(group, choice) -> the dataclass that holds its defaults."""
    from weightsim.chains.options import ChainOptions
    from weightsim.compare.run import CompareConfig
    from weightsim.htt.run import ClassifierConfig, ProtocolConfig
    from weightsim.recover.options import ECConfig
    from weightsim.zoo.generate import ZooConfig

    return {("zoo", "default"): ZooConfig, ("chains", "default"): ChainOptions, ("protocol", "htt"): ProtocolConfig,
            ("classifier", "linear"): ClassifierConfig, ("compare", "default"): CompareConfig,
            ("ec", "default"): ECConfig}


def register_configs() -> None:
    """Store every structured config in Hydra's ConfigStore (call before ``hydra.main``)."""
    store = ConfigStore.instance()
    for (group, name), node in structured_configs().items():
        store.store(group=group, name=name, node=node)


def choices(group: str) -> list[str]:
    """The options of config group ``group`` (e.g. "arch"): conf/<group>/*.yaml and the structured
    configs of that group, sorted. Files named ``_*.yaml`` are parts that choices include, not choices."""
    structured = [name for (g, name) in structured_configs() if g == group]
    return sorted({p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_")} | set(structured))


def check_override_types(argv: list[str]) -> None:
    """A command-line value for a field of a structured config that its type refuses (``ec.width_factor=four``,
    ``zoo.seeds=10.5``), or a field it lacks, is one WeightsimError line naming the field, its type and
    default (before Hydra composes the config; Hydra would end in its own multi-line error, exit 1)."""
    from dataclasses import MISSING, fields

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    from weightsim.errors import WeightsimError

    by_group: dict[str, list[type]] = {}
    for (group, _), node in structured_configs().items():
        by_group.setdefault(group, []).append(node)
    parser = OverridesParser.create()
    for arg in argv:
        group, _, name = arg.lstrip("+~").partition("=")[0].partition(".")
        if len(by_group.get(group, [])) != 1 or not name or "." in name or arg.startswith("~"):
            continue
        try:
            override = parser.parse_overrides([arg])[0]
        except Exception:  # noqa: BLE001 (Hydra reports what it cannot parse)
            continue
        node = by_group[group][0]
        known = {f.name: f for f in fields(node)}
        if name not in known:
            raise WeightsimError(f"{group}.{name}: no such setting; {group} has {', '.join(sorted(known))}")
        f = known[name]
        default = f.default if f.default is not MISSING else "required"
        try:
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except Exception:  # noqa: BLE001 (an interval sweep has no values to list: its sweeper checks it)
            continue
        for v in values:
            try:
                OmegaConf.merge(OmegaConf.structured(node), {name: v})
            except ValidationError:
                kind = getattr(f.type, "__name__", str(f.type))
                raise WeightsimError(f"{group}.{name}={v}: expected type {kind} (default {default}), e.g. "
                                     f"{group}.{name}={default}") from None
