"""Package attributes imported on first use (PEP 562), so that importing one light module of a
package (``weightsim.zoo.options``, ``weightsim.htt.settings``) does not import the whole package:
the CLI checks a command line before it imports Lightning (weightsim/stages/check.py)."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable


def lazy_exports(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: attribute ``name`` is ``name`` of the module
    ``where[name]`` (relative to ``package`` when it starts with a dot), imported when first asked for."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(where[name], package), name)

    return __getattr__
