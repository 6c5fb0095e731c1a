"""User-facing errors and warnings: one clear line that names the thing and the fix."""

from __future__ import annotations

import warnings


class WeightsimError(Exception):
    """Bad input or state a user can fix. The CLI prints it as one line, without a traceback."""


class ConfigError(WeightsimError):
    """A config value is out of range or inconsistent."""


class ZooError(WeightsimError):
    """A zoo directory is missing, corrupt, foreign, or does not match the config."""


class DataError(WeightsimError):
    """A dataset folder is missing, partial or corrupt."""


class ChainError(WeightsimError):
    """A model (or a pair of models) the chain rule cannot handle."""


class WeightsimWarning(UserWarning):
    """Something that changes a result without being an error (a protocol skipped, a chain
    sketched, nets left out). The CLI prints each as one ``warning: ...`` line and records it in
    run.json and report.md."""


def in_cause_chain(e: BaseException | None, kinds: type | tuple[type, ...]) -> BaseException | None:
    """The first exception of ``kinds`` among e and its causes: Hydra's ``instantiate`` re-raises
    whatever a ``_target_`` raises as an InstantiationException ``from`` it. None when there is none."""
    while e is not None and not isinstance(e, kinds):
        e = e.__cause__
    return e


def warn(message: str) -> None:
    """Say out loud a change the user did not ask for (see ``WeightsimWarning``)."""
    warnings.warn(message, WeightsimWarning, stacklevel=2)
