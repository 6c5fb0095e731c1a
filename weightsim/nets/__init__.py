"""Task architectures. Every builder takes (input_shape, num_classes, **arch options)."""

from weightsim.nets.conv import PlainNet, Residual, ResNet, Unit
from weightsim.nets.gru import GRU, GRUNet, OneHot
from weightsim.nets.mlp import MLP
from weightsim.nets.resmlp import ResNetMLP
from weightsim.nets.spec import activation

__all__ = ["MLP", "activation", "PlainNet", "ResNet", "ResNetMLP", "GRU", "GRUNet", "OneHot", "Residual", "Unit"]
