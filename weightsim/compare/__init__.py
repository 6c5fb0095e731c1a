"""Other ways to compare networks, on the same zoos: neuron activation subspace match."""

from weightsim.compare.subspace import GRID, Match, match_curve, max_epsilon, max_match, min_epsilon, minimal_match, simple_matches
