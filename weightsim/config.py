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
    from weightsim.zoo.generate import ZooConfig

    return {("zoo", "default"): ZooConfig, ("chains", "default"): ChainOptions, ("protocol", "htt"): ProtocolConfig,
            ("classifier", "linear"): ClassifierConfig, ("compare", "default"): CompareConfig}


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
