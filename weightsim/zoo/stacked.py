"""Stacked population layout: the K members of a population run as one K-times-wider net, no vmap.

Conv activations are (B, K*C, H, W) in channels-last memory, member k owning channels
[kC, (k+1)C): a convolution is one grouped convolution (member k's kernels see only member k's
channels), BatchNorm is per channel so BN over K*C channels is K per-member BNs, and activations
and pooling act per element or per channel. Flat activations are (K, B, F): a Linear layer is one
batched matmul. Containers keep their own forward, so a residual ``x + body(x)`` works unchanged;
that is why a container may only compose its children with element-wise ops: nn.Sequential, and
classes that declare it with ``elementwise_composition = True`` (nets/conv.py Unit, Residual).

On a CPU this layout beats vmap for conv nets (channels-last pooling, BN and grouped convolution
without vmap's per-op layout moves; ``make bench``). A net with any other module (a GRU, a custom
forward) is not stackable and trains with vmap (``zoo.vectorize=auto``).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightsim.nets.spec import BATCHNORMS, ELEMENTWISE

POOLS = (nn.MaxPool2d, nn.AvgPool2d)


class StackedLeaf(nn.Module):
    """A leaf of the template that reads its stacked (K, *shape) tensors from the shared context."""

    def __init__(self, leaf: nn.Module, prefix: str, ctx: SimpleNamespace):
        super().__init__()
        self.prefix = prefix
        self.__dict__["leaf"] = leaf  # the template's leaf (on meta), for its hyper-parameters only
        self.__dict__["ctx"] = ctx  # params / buffers of the current forward, names as in the template

    def p(self, name: str) -> Tensor | None:
        return self.ctx.params.get(self.prefix + name)

    def b(self, name: str) -> Tensor | None:
        return self.ctx.buffers.get(self.prefix + name)


class StackedConv2d(StackedLeaf):
    def forward(self, x: Tensor) -> Tensor:  # (B, K*C_in, H, W) -> (B, K*C_out, H', W')
        c, w, b = self.leaf, self.p("weight"), self.p("bias")  # w: (K, O, I / groups, kh, kw)
        return F.conv2d(x, w.flatten(0, 1), None if b is None else b.flatten(), c.stride, c.padding, c.dilation,
                        c.groups * w.shape[0])


class StackedLinear(StackedLeaf):
    def forward(self, x: Tensor) -> Tensor:  # (K, B, I) -> (K, B, O): y_k = x_k W_k^T + b_k
        if x.dim() != 3:
            raise ValueError(f"stacked Linear '{self.prefix[:-1]}' needs flat (K, B, F) input, got {tuple(x.shape)}")
        w, b = self.p("weight"), self.p("bias")
        return torch.bmm(x, w.transpose(1, 2)) if b is None else torch.baddbmm(b[:, None], x, w.transpose(1, 2))


class StackedBatchNorm(StackedLeaf):
    def forward(self, x: Tensor) -> Tensor:  # conv (B, K*C, H, W) or flat (K, B, C), per member and channel
        bn = self.leaf
        w, b = self.p("weight"), self.p("bias")  # (K, C) each
        mean, var = self.b("running_mean"), self.b("running_var")
        training = self.training or mean is None
        if training and (count := self.b("num_batches_tracked")) is not None:
            count.add_(1)
        flat = x.dim() == 3
        k, n, c = x.shape if flat else (None, None, None)
        y = F.batch_norm(x.transpose(0, 1).reshape(n, k * c) if flat else x,
                         None if mean is None else mean.view(-1), None if var is None else var.view(-1),
                         None if w is None else w.flatten(), None if b is None else b.flatten(),
                         training, bn.momentum, bn.eps)  # running stats update in place, through the views
        return y.view(n, k, c).transpose(0, 1) if flat else y


class StackedFlatten(nn.Module):
    """Conv layout (B, K*C, H, W) -> flat (K, B, C*H*W), each member's features in its own NCHW order;
    flat input (per-member 1-D samples) passes through."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            return x
        return x.reshape(x.shape[0], self.k, -1).transpose(0, 1)


def why_not_stackable(template: nn.Module, sample_shape: tuple[int, ...]) -> str | None:
    """None when ``template`` can run in the stacked layout, else what prevents it (for the error)."""
    if len(sample_shape) not in (1, 3):
        return f"inputs of shape {tuple(sample_shape)} (the stacked layout takes C x H x W or flat samples)"
    for name, m in template.named_modules():
        where = f"module '{name or '<net>'}' ({type(m).__name__})"
        kind = type(m)
        if kind in ELEMENTWISE or kind in POOLS or kind is nn.Linear:
            continue
        if kind is nn.Conv2d:
            if m.padding_mode != "zeros":
                return f"{where}: padding_mode={m.padding_mode}"
        elif kind in BATCHNORMS:
            if m.momentum is None:
                return f"{where}: momentum=None (cumulative average)"
        elif kind is nn.Flatten:
            if (m.start_dim, m.end_dim) != (1, -1):
                return f"{where}: start_dim={m.start_dim}, end_dim={m.end_dim}"
        elif isinstance(m, nn.Sequential) and kind.forward is nn.Sequential.forward:
            continue
        elif getattr(kind, "elementwise_composition", False):
            continue
        else:
            return f"{where}: not a layer the stacked layout knows"
    return None


def stacked_net(template: nn.Module, k: int) -> tuple[nn.Module, SimpleNamespace]:
    """A copy of ``template`` whose parametrized leaves run K members at once, and the context
    (params, buffers: name -> stacked tensor) that its leaves read; set it before each forward."""
    net, ctx = copy.deepcopy(template), SimpleNamespace(params={}, buffers={})
    # a net whose first leaf is a Flatten (MLPs) takes its input flat: no conv layout in between
    ctx.flat_input = type(next(m for m in net.modules() if not list(m.children()))) is nn.Flatten
    wrap = {nn.Conv2d: StackedConv2d, nn.Linear: StackedLinear, nn.BatchNorm1d: StackedBatchNorm,
            nn.BatchNorm2d: StackedBatchNorm}
    for name, m in list(net.named_modules()):
        if type(m) in wrap:
            new = wrap[type(m)](m, name + ".", ctx)
        elif type(m) is nn.Flatten:
            new = StackedFlatten(k)
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr, new)
    return net, ctx


def to_stacked(x: Tensor, flat: bool = False) -> Tensor:
    """Members' inputs (K, B, *sample) -> conv layout (B, K*C, H, W) channels-last, or flat (K, B, F)
    (``flat``: for a net that flattens its input first; a view, where the conv layout is a copy)."""
    if x.dim() == 5 and not flat:
        k, b, c, h, w = x.shape
        return x.transpose(0, 1).reshape(b, k * c, h, w).contiguous(memory_format=torch.channels_last)
    return x.flatten(2)


def from_stacked(y: Tensor, k: int) -> Tensor:
    """A layer's output in the stacked layout -> members first: conv (B, K*C, H, W) -> (K, B, C, H, W);
    flat (K, B, F) stays as it is."""
    if y.dim() == 4:
        b, kc, h, w = y.shape
        return y.reshape(b, k, kc // k, h, w).transpose(0, 1)
    return y
