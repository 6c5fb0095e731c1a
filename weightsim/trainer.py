"""The Lightning Trainers the library builds (a zoo's populations, the weight classifiers, the zoo
bench's one-net runs): silent and stateless, from one set of flags.

``TrainerConfig`` holds the flags every such Trainer shares: one device, no checkpoints, progress
bar, model summary or sanity validation (the zoo draws its own progress bar and writes its own
files). Hydra reads it as the ``trainer`` group (``trainer=silent``, weightsim/stages/); what
differs per use (steps or epochs, accelerator, logger, callbacks) is passed to ``silent_trainer``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import lightning as L


@dataclass
class TrainerConfig:
    """Flags of ``lightning.Trainer`` (their Lightning names) shared by the library's Trainers."""

    devices: int = 1
    enable_checkpointing: bool = False
    enable_progress_bar: bool = False
    enable_model_summary: bool = False
    num_sanity_val_steps: int = 0


def silent_trainer(tc: TrainerConfig | None = None, **run) -> L.Trainer:
    """``lightning.Trainer`` with the flags of ``tc`` (default ``TrainerConfig()``) and the
    use's own arguments ``run`` (e.g. max_steps, accelerator, logger, callbacks), which win."""
    import lightning as L  # here, not above: the CLI reads TrainerConfig before it imports Lightning

    return L.Trainer(**{**asdict(tc or TrainerConfig()), **run})
