"""Options of chain normalization: the ``chains`` config group (structured config ``chains=default``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from weightsim.errors import ConfigError

REMEDIES = ("auto", "exact", "sketch")
SCALES = ("none", "fro", "unit")
BN_MODES = ("invariant", "ignore", "fold")


@dataclass
class ChainOptions:
    """How chain features are computed (docs/chains.md).

    bias: homogeneous coordinates [h, 1] (not in the paper).
    bn: how a BatchNorm after weight layer l enters the chain.
        "invariant" (default): where l's output reaches the BN through positively homogeneous modules
        only (ReLU, leaky ReLU, pooling, ...), the BN absorbs a positive per-channel scale of layer l;
        every column of C_l is scaled to norm 1 (removing it). Every BN's gamma (and, with bias, beta)
        is folded in before the next layer (data-free: running statistics are not read).
        "ignore": the paper's chain, BN plays no part. "fold": fold each BN's eval-form affine map
        (running statistics) into the next weight layer.
    scale: "none"; "fro": per chain, the Gram divided by its Frobenius norm (scale normalization);
        "unit": every column of C_l (a unit of layer l) scaled to norm 1 before the Gram, which also
        removes a per-unit scale of layer l (ReLU rescaling of the last layer of chain l, without BN).
    remedy: "auto" (exact Gram while its d x d float32 matrix fits ``budget_mb``, else a sketch),
        or force "exact" / "sketch" for every chain.
    budget_mb: memory budget of one exact Gram (one net, one chain), MiB.
    sketch_dim: m, the rows of the fixed seeded left sketch S (m x d).
    sketch_seed: seed of the sketch matrices (fixed: every net of a zoo gets the same S).
    batch_size: nets per batch when featurizing a zoo.
    batch_budget_mb: a zoo batch is also cut so that its estimated working memory stays under this.
    """

    bias: bool = False
    bn: str = "invariant"
    scale: str = "none"
    remedy: str = "auto"
    budget_mb: float = 1.0
    sketch_dim: int = 128
    sketch_seed: int = 0
    batch_size: int = 256
    batch_budget_mb: float = 512.0  # (the one source of these defaults: Hydra reads this class)

    def __post_init__(self) -> None:
        if self.remedy not in REMEDIES:
            raise ConfigError(f"chains.remedy='{self.remedy}': choose from {', '.join(REMEDIES)}")
        if self.scale not in SCALES:
            raise ConfigError(f"chains.scale='{self.scale}': choose from {', '.join(SCALES)}")
        if self.bn not in BN_MODES:
            raise ConfigError(f"chains.bn='{self.bn}': choose from {', '.join(BN_MODES)}")
        if self.sketch_dim < 1 or self.batch_size < 1 or self.budget_mb <= 0 or self.batch_budget_mb <= 0:
            raise ConfigError("chains.sketch_dim, batch_size, budget_mb and batch_budget_mb must be positive")

    def as_dict(self) -> dict:
        return asdict(self)
