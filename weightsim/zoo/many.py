"""K nets of one architecture run forward at once, each with its own weights and input: the one
batched forward pass that population training, the zoo view and recover's students share."""

from __future__ import annotations

import contextlib
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from weightsim.errors import ConfigError
from weightsim.zoo.stacked import from_stacked, stacked_net, to_stacked, why_not_stackable

VECTORIZE = ("auto", "stacked", "vmap", "loop")


def choose_vectorize(vectorize: str, template: nn.Module, sample_shape: tuple[int, ...]) -> str:
    """The mode that runs ``template``: stacked, vmap or loop (auto: stacked where the net allows)."""
    if vectorize not in VECTORIZE:
        raise ConfigError(f"zoo.vectorize='{vectorize}': choose from {', '.join(VECTORIZE)}")
    if vectorize in ("auto", "stacked"):
        why = why_not_stackable(template, tuple(sample_shape))
        if why and vectorize == "stacked":
            raise ConfigError(f"zoo.vectorize=stacked cannot run this net: {why}; use zoo.vectorize=auto "
                              f"(stacked where it can, else vmap) or vmap")
        vectorize = "vmap" if why else "stacked"
    return vectorize


def first_tensor(out) -> Tensor:
    """A module's output as one tensor: a tuple (a recurrent layer's (sequence, last states)) gives its first."""
    return out[0] if isinstance(out, (tuple, list)) else out


@contextlib.contextmanager
def capturing(net: nn.Module, names: tuple[str, ...], into: dict[str, Tensor], convert=lambda y: y):
    """While inside, the output of each module of ``net`` named in ``names`` goes to ``into[name]``
    (through ``convert``)."""
    hooks = [net.get_submodule(n).register_forward_hook(
        lambda _m, _i, out, n=n: into.__setitem__(n, convert(first_tensor(out)))) for n in names]
    try:
        yield into
    finally:
        for h in hooks:
            h.remove()


class ManyNets:
    """The forward pass of K nets of one architecture at once, each with its own weights and input.

    Called with stacked params / buffers (name -> (K, *shape), names as in ``template``) and
    x (K, B, *input_shape); returns logits (K, B, C) and, for each module named in ``capture``,
    its output (K, B, ...) (a tuple output gives its first element). vmap and loop also run any
    subset of the members (a leading axis of K' < K); stacked runs all K. Modes:

    stacked: the members as one K-times-wider net (zoo/stacked.py): grouped channels-last
    convolutions, BN over K*C channels, batched matmuls; the fastest where the net allows it.
    vmap: one batched op per layer (batched matmul; grouped convolution for convs).
    loop: the members one after another, each on its own slices of the stacked tensors (the
    same parameters, the same summed loss, one optimizer): on a CPU this beats grouped
    convolutions at large inputs; the per-run overhead stays amortized either way.
    The template's train / eval mode is the mode of every member (BN: batch or running statistics).
    """

    def __init__(self, template: nn.Module, k: int, sample_shape: tuple[int, ...], vectorize: str = "auto"):
        self.template, self.k = template, k
        self.mode = choose_vectorize(vectorize, template, sample_shape)
        if self.mode == "stacked":
            self.wide_net, self.ctx = stacked_net(template, k)

    def __call__(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
                 capture: tuple[str, ...] = ()) -> tuple[Tensor, dict[str, Tensor]]:
        capture = tuple(capture)
        if self.mode == "stacked":
            self.ctx.params, self.ctx.buffers = params, buffers
            self.wide_net.train(self.template.training)
            with capturing(self.wide_net, capture, {}, partial(from_stacked, k=self.k)) as acts:
                return self.wide_net(to_stacked(x, self.ctx.flat_input)), acts

        def one(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            with capturing(self.template, capture, {}) as acts:
                return functional_call(self.template, (p, b), (xb,)), acts

        if self.mode == "vmap":
            return vmap(one)(params, buffers, x)
        per = {k: v.unbind(0) for k, v in params.items()}  # one backward node per tensor
        outs = [one({k: v[i] for k, v in per.items()}, {k: v[i] for k, v in buffers.items()}, x[i])
                for i in range(len(x))]
        return torch.stack([o for o, _ in outs]), {n: torch.stack([a[n] for _, a in outs]) for n in capture}
