"""Layer kinds that the chain walk (chains/core.py) and the stacked population layout
(zoo/stacked.py) both treat alike: one list, so the two never disagree on what a layer is."""

from torch import nn

# act on each unit (channel) alone and hold no weights
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.Identity)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
