"""User-facing errors: one clear line that names the thing and the fix."""


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
