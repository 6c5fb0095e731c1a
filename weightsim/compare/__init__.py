from weightsim.compare.align import (Alignment, PermSpec, canonicalize_scale, interpolation_losses, loss_barrier,  # noqa: F401
                                     perm_spec, weight_matching)
