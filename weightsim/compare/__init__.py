from weightsim.compare.align import Alignment, PermSpec, canonicalize_scale, loss_barrier, perm_spec, weight_matching  # noqa: F401
