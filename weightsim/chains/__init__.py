"""Chain normalization: per-chain features invariant to hidden-unit permutations (DESIGN.md §2)."""

from weightsim.chains.core import (chain_features, chain_matrices, chain_layers, gram_features,
                                   raw_features, zoo_chain_features, zoo_raw_features)

__all__ = ["chain_matrices", "chain_features", "chain_layers", "gram_features", "raw_features",
           "zoo_chain_features", "zoo_raw_features"]
