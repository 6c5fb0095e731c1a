"""Not a net: the holder of features given per chain (``weightsim.htt.test`` on features), so that
they are stored and read as a zoo and HTT tests them with the ``features`` measure like any other."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Features(nn.Module):
    """One parameter ``chain<c>`` of shape (D_c,) per chain c = 1, 2, ...: a net's given features."""

    def __init__(self, dims: list[int], input_shape: tuple[int, ...] = (), num_classes: int | None = None):
        super().__init__()
        self.dims = [int(d) for d in dims]
        for c, d in enumerate(self.dims, 1):
            self.register_parameter(f"chain{c}", nn.Parameter(torch.zeros(d)))

    def forward(self, x: Tensor) -> Tensor:
        raise TypeError("Features holds given features, not a net: it has no forward")
