"""GRU-2 + FC for character sequences (NameData), written with explicit tensor ops.

``nn.GRU`` has no ``torch.func.vmap`` batching rule (``aten::gru.input``), so the population trainer
cannot train it. ``GRU`` below is the same function with the same parameters (names, shapes, gate
order r, z, n, initialization), and so the chain rule and torch's own ``nn.GRU`` weights agree:

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Inputs are int64 character codes (N, T) with 0 = padding; a padded step leaves h unchanged.
The input coordinate space is a one-hot code: code c in 1..vocab is coordinate c - 1 (codes above
vocab share the last coordinate), so the GRU chains' rows are characters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from weightsim.errors import ConfigError


class GRU(nn.Module):
    """Multi-layer GRU, batch_first. forward(x (N, T, in), mask (N, T) bool | None, h0 (L, N, H) | None)
    -> (output (N, T, H), h_n (L, N, H)), equal to ``nn.GRU(batch_first=True)`` with the same weights
    when nothing is masked."""

    chain_gru = True  # the chain walk reads it like nn.GRU
    bidirectional = False
    proj_size = 0

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers, self.bias = input_size, hidden_size, num_layers, bias
        k = 1.0 / math.sqrt(hidden_size)
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size
            shapes = {f"weight_ih_l{layer}": (3 * hidden_size, n_in), f"weight_hh_l{layer}": (3 * hidden_size, hidden_size)}
            if bias:
                shapes |= {f"bias_ih_l{layer}": (3 * hidden_size,), f"bias_hh_l{layer}": (3 * hidden_size,)}
            for name, shape in shapes.items():  # torch's init: U(-1/sqrt(H), 1/sqrt(H))
                self.register_parameter(name, nn.Parameter(torch.empty(shape).uniform_(-k, k)))

    def forward(self, x: Tensor, mask: Tensor | None = None, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n, t = x.shape[0], x.shape[1]
        hs = []
        for layer in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
            gi = x @ w_ih.T  # (N, T, 3H): all input paths at once
            if self.bias:
                gi = gi + getattr(self, f"bias_ih_l{layer}")
            b_hh = getattr(self, f"bias_hh_l{layer}") if self.bias else None
            h = h0[layer] if h0 is not None else x.new_zeros(n, self.hidden_size)
            out = []
            for step in range(t):
                gh = h @ w_hh.T
                if b_hh is not None:
                    gh = gh + b_hh
                i_r, i_z, i_n = gi[:, step].chunk(3, -1)
                h_r, h_z, h_n = gh.chunk(3, -1)
                r = torch.sigmoid(i_r + h_r)
                z = torch.sigmoid(i_z + h_z)
                cand = torch.tanh(i_n + r * h_n)
                new = (1 - z) * cand + z * h
                h = new if mask is None else torch.where(mask[:, step, None], new, h)
                out.append(h)
            x = torch.stack(out, 1)
            hs.append(h)
        return x, torch.stack(hs)


class OneHot(nn.Module):
    """(N, T) int64 codes -> (N, T, vocab) float: code c in 1..vocab -> coordinate c - 1, codes above
    vocab -> the last coordinate, 0 (padding) -> zeros. No weights: the chain passes it through."""

    chain_pass_through = True

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, codes: Tensor) -> Tensor:
        idx = codes.clamp(max=self.vocab)
        return (idx[..., None] == torch.arange(1, self.vocab + 1, device=codes.device)).float()


class GRUNet(nn.Module):
    """GRU-``layers`` + FC: one-hot characters -> GRU -> last hidden state of the top layer -> Linear.

    input (N, T) int64 codes -> logits (N, num_classes).
    """

    chain_order = ("onehot", "rnn", "fc")  # forward order for the chain walk

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 32, layers: int = 2,
                 vocab_size: int | None = None, bias: bool = True):
        super().__init__()
        if len(tuple(input_shape)) != 1:
            raise ConfigError(f"gru archs need character sequences (T,), got input_shape={tuple(input_shape)}")
        if vocab_size is None:
            raise ConfigError("arch.vocab_size is unset: run it on a sequence dataset (it sets vocab_size) "
                              "or pass arch.vocab_size=<number of codes, padding 0 included>")
        if hidden < 1 or layers < 1 or vocab_size < 2:
            raise ConfigError("arch.hidden and arch.layers must be >= 1 and arch.vocab_size >= 2")
        vocab = vocab_size - 1  # codes 1..vocab_size-1 are characters, 0 is padding
        self.input_shape = tuple(input_shape)
        self.onehot = OneHot(vocab)
        self.rnn = GRU(vocab, hidden, layers, bias)
        self.fc = nn.Linear(hidden, num_classes, bias=bias)

    def forward(self, codes: Tensor) -> Tensor:
        x = self.onehot(codes).to(self.fc.weight.dtype)
        _, h = self.rnn(x, mask=codes != 0)
        return self.fc(h[-1])
