"""Task architectures. Every builder takes (input_shape, num_classes, **arch options)."""

from weightsim.nets.mlp import MLP, activation

__all__ = ["MLP", "activation"]
