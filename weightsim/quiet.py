"""Lightning's chatter kept off the terminal where weightsim runs a Trainer of its own (the weight
classifier's fits): its INFO lines ("GPU available", tips, "`Trainer.fit` stopped") and the warnings
that say nothing about the user's work."""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

# warnings of a Trainer run that concern Lightning itself, not the user's nets or settings
HARMLESS = (".*does not have many workers.*", ".*GPU available but not used.*", ".*LeafSpec.*")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """While inside, Lightning's loggers pass WARNING and above only and the ``HARMLESS`` warnings are
    dropped; the levels and warning filters come back after."""
    import lightning.pytorch  # noqa: F401  (it sets its loggers to INFO on import)

    names = [n for n in logging.root.manager.loggerDict if n.startswith(("lightning", "pytorch_lightning"))]
    loggers = [logging.getLogger(n) for n in dict.fromkeys(["lightning.pytorch", "lightning.fabric", *names])]
    # only those with a level of their own below WARNING (the others inherit it): each setLevel
    # clears every logger's cache, which per fit cost more than the fit's own bookkeeping
    loggers = [lg for lg in loggers if logging.NOTSET < lg.level < logging.WARNING]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in HARMLESS:
                warnings.filterwarnings("ignore", pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
