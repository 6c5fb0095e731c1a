"""The stages: one module per app, beside the CLI (weightsim/cli.py wraps each as an entry point).

A stage reads the composed Hydra config and the job's Hydra state (run directory, choices: job.py),
builds the library's dataclasses from them and calls the library, which never reads Hydra's state:
zoo.py (weightsim-zoo, -zoo import), htt.py (weightsim-htt; weightsim-run is zoo then htt),
compare.py (weightsim-compare), recover.py (weightsim-recover), collect.py (weightsim-collect);
check.py checks every setting an app reads before any work.

The stages also feed weightsim/config.py: ``register_configs`` stores the dataclasses that hold the
defaults of the structured config groups in Hydra's ConfigStore, where ``config.choices`` finds them.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

RECOVER_SCHEMA = "recover_schema"  # conf/recover.yaml's first default: RecoverConfig, its top level typed


def structured_configs() -> dict[tuple[str, str], type]:
    """(group, choice) -> the dataclass that holds its defaults."""
    from weightsim.chains.options import ChainOptions
    from weightsim.compare.run import CompareConfig
    from weightsim.htt.settings import ClassifierConfig, ProtocolConfig
    from weightsim.measures.registry import settings_groups
    from weightsim.recover.options import ECConfig
    from weightsim.trainer import TrainerConfig
    from weightsim.zoo.options import ZooConfig

    return {("zoo", "default"): ZooConfig, ("chains", "default"): ChainOptions, ("protocol", "htt"): ProtocolConfig,
            ("classifier", "linear"): ClassifierConfig, ("compare", "default"): CompareConfig,
            ("ec", "default"): ECConfig, ("trainer", "silent"): TrainerConfig, **settings_groups()}


def register_configs() -> None:
    """Store every structured config in Hydra's ConfigStore (call before ``hydra.main`` or ``compose``)."""
    from weightsim.recover.options import RecoverConfig

    store = ConfigStore.instance()
    for (group, name), node in structured_configs().items():
        store.store(group=group, name=name, node=node)
    store.store(name=RECOVER_SCHEMA, node=RecoverConfig)
