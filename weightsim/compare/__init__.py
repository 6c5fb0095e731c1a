"""Other ways to compare networks, on the same zoos (docs/compare.md): centered kernel alignment
(CKA) and the neuron activation subspace match between the activations of two nets, and weight
matching (hidden units aligned by permutation, then compared). The functions live with the measures
that use them (weightsim/measures/); weightsim-compare (compare/run.py) runs every measure on a zoo."""

from weightsim.measures.align import (Alignment, PermSpec, aligned_distances, canonicalize_scale,
                                      interpolation_losses, loss_barrier, perm_spec, weight_matching)
from weightsim.measures.cka import MinibatchCKA, cka_matrix, kernel_cka, linear_cka, linear_cka_batched
from weightsim.measures.subspace import (GRID, Match, match_curve, max_epsilon, max_match, min_epsilon,
                                         minimal_match, simple_matches)

__all__ = ["Alignment", "PermSpec", "aligned_distances", "canonicalize_scale", "interpolation_losses",
           "loss_barrier", "perm_spec", "weight_matching",
           "MinibatchCKA", "cka_matrix", "kernel_cka", "linear_cka", "linear_cka_batched",
           "GRID", "Match", "match_curve", "max_epsilon", "max_match", "min_epsilon", "minimal_match",
           "simple_matches"]
