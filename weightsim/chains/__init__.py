"""Chain normalization: per-chain features invariant to the hidden symmetries of a net (docs/chains.md)."""

from weightsim.chains.core import (ChainLayer, ChainPlan, chain_features, chain_layers, chain_matrices,
                                   describe_chains, gram_features, plan_chains, raw_features,
                                   zoo_chain_features, zoo_raw_features)
from weightsim.chains.options import ChainOptions

__all__ = ["ChainOptions", "ChainLayer", "ChainPlan", "chain_matrices", "chain_features", "chain_layers",
           "describe_chains", "gram_features", "plan_chains", "raw_features", "zoo_chain_features",
           "zoo_raw_features"]
