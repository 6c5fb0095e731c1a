"""Options of chain normalization: the ``chains`` config group (structured config ``chains=default``)."""

from __future__ import annotations

import math
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


def sketch_note(plan: list[dict], opts: ChainOptions) -> str | None:
    """What chains.remedy=auto sketched in ``plan`` (``describe_chains``' rows of the chains tested)
    and a setting that works: the chains.budget_mb that makes exact the sketched chains whose exact
    Gram one net can hold within a featurizing batch (chains.batch_budget_mb), and for the others
    why the sketch stays (their exact Gram per net) and chains.sketch_dim for a closer one. None
    when nothing was sketched by auto."""
    if opts.remedy != "auto":
        return None
    sk = [p for p in plan if p["remedy"] == "sketch"]
    if not sk:
        return None
    mib = {p["chain"]: p["rows_exact"] ** 2 * 4 / 2 ** 20 for p in sk}
    m = opts.sketch_dim
    what = ", ".join(f"chain {c} (d_l = {p['rows_exact']}, exact Gram {mib[c]:.2f} MiB)" for c, p in
                     ((p["chain"], p) for p in sk))
    head = (f"{what} sketched by chains.remedy=auto: a chain whose exact d_l x d_l Gram of one net exceeds "
            f"chains.budget_mb={opts.budget_mb} (and every chain after it) gets the Gram of an m = {m}-row seeded "
            f"sketch S C_l instead (approximate, {m * (m + 1) // 2} features)")
    fit = []  # the sketched chains, in order, that can be exact: a chain is exact only after exact ones
    for p in sk:
        if mib[p["chain"]] > opts.batch_budget_mb:
            break
        fit.append(p["chain"])
    cap = f"chains.batch_budget_mb={opts.batch_budget_mb}"
    closer = f"chains.sketch_dim={2 * m} gives a closer sketch ({2 * m * (2 * m + 1) // 2} features per chain)"
    budget = lambda cs: math.ceil(max(mib[c] for c in cs) * 100) / 100  # noqa: E731
    if len(fit) == len(sk):
        return f"{head}; for exact features set chains.budget_mb={budget(fit)} or chains.remedy=exact"
    rest = [p["chain"] for p in sk if p["chain"] not in fit]
    why = (f"the exact Gram of chain {rest[0]} alone is {mib[rest[0]] / 1024:.2f} GiB per net, more than a "
           f"featurizing batch holds ({cap}), so the sketch is the usable setting for chain(s) {rest}")
    if fit:
        return f"{head}; chains.budget_mb={budget(fit)} makes chain(s) {fit} exact; {why}; {closer}"
    return f"{head}; {why}; {closer}"
