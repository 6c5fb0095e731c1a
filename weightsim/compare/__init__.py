from weightsim.compare.align import (Alignment, PermSpec, aligned_distances, canonicalize_scale,  # noqa: F401
                                     interpolation_losses, loss_barrier, perm_spec, weight_matching)
