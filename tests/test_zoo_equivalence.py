"""A member of a population ends with the weights the same seed gets when trained alone.

Three references per architecture (MLP, conv + BatchNorm, explicit-op GRU): the population, a
population of one through the same code path, and a plain loop (nn.Module + torch.optim.SGD +
clip_grad_norm_) with the same init seed and data order. Momentum, weight decay and gradient
clipping are on, and the clip threshold is low enough that it binds.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightsim.data.digits import digits
from weightsim.errors import ConfigError
from weightsim.nets.conv import ResNet
from weightsim.nets.mlp import MLP
from weightsim.nets.resmlp import ResNetMLP
from weightsim.zoo.generate import ZooConfig, train_population
from weightsim.zoo.population import MemberStreams, init_member, member_seeds, steps_for


class ConvBN(nn.Sequential):
    """(B, 1, 8, 8) -> (B, C): two conv + BatchNorm + ReLU blocks, then a linear head."""

    def __init__(self, input_shape=(1, 8, 8), num_classes: int = 2):
        c = input_shape[0]
        super().__init__(nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, num_classes))


class ExplicitGRU(nn.Module):
    """Two GRU layers written with explicit ops (nn.GRU has no vmap rule) and a linear head.

    Reads digits rows as a sequence: x (B, 64) -> (B, T=8, 8) -> last hidden (B, H) -> (B, C).
    """

    def __init__(self, input_shape=(64,), num_classes: int = 2, hidden: int = 6, steps: int = 8):
        super().__init__()
        self.steps, self.hidden = steps, hidden
        d = input_shape[0] // steps
        self.w_ih0, self.w_hh0 = nn.Linear(d, 3 * hidden), nn.Linear(hidden, 3 * hidden)
        self.w_ih1, self.w_hh1 = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, 3 * hidden)
        self.fc = nn.Linear(hidden, num_classes)

    @staticmethod
    def cell(x: Tensor, h: Tensor, w_ih: nn.Linear, w_hh: nn.Linear) -> Tensor:
        """One GRU step: x (B, d), h (B, H) -> (B, H), gates in torch's (r, z, n) order."""
        gi, gh = w_ih(x).chunk(3, -1), w_hh(h).chunk(3, -1)
        r = torch.sigmoid(gi[0] + gh[0])
        z = torch.sigmoid(gi[1] + gh[1])
        n = torch.tanh(gi[2] + r * gh[2])
        return (1 - z) * n + z * h

    def forward(self, x: Tensor) -> Tensor:
        seq = x.reshape(x.shape[0], self.steps, -1)
        h0 = h1 = seq.new_zeros(x.shape[0], self.hidden)
        for t in range(self.steps):
            h0 = self.cell(seq[:, t], h0, self.w_ih0, self.w_hh0)
            h1 = self.cell(h0, h1, self.w_ih1, self.w_hh1)
        return self.fc(h1)


ARCHS = {
    "mlp": (partial(MLP, hidden=16, depth=3), False, "vmap"),
    "conv_bn": (ConvBN, True, "vmap"),
    "gru": (ExplicitGRU, False, "vmap"),
    "conv_bn_loop": (ConvBN, True, "loop"),  # the members-in-a-loop path, BN included
    # the stacked layout (zoo/stacked.py): grouped channels-last convs, BN over K*C channels, bmm
    "mlp_stacked": (partial(MLP, hidden=16, depth=3), False, "stacked"),
    "conv_bn_stacked": (ConvBN, True, "stacked"),
    "resnet_stacked": (partial(ResNet, channels=4), True, "stacked"),  # residual units, BN2d, max-pool
    "resnet_mlp_stacked": (partial(ResNetMLP, width=8, blocks=2), False, "stacked"),  # residual, BN1d
}
ZC = ZooConfig(seeds=2, epochs=0.5, batch_size=16, lr=0.1, momentum=0.9, weight_decay=1e-3, grad_clip=0.5,
               population_size=6, accelerator="cpu")


def plain_reference(build, taskset, task_id: int, seed: int, zc: ZooConfig) -> dict[str, Tensor]:
    """The same net trained alone, without Lightning or vmap: the textbook SGD loop."""
    init_seed, data_seed = member_seeds(zc.base_seed, task_id, seed)
    net = init_member(build, init_seed)
    task = taskset.tasks[task_id]
    opt = torch.optim.SGD(net.parameters(), lr=zc.lr, momentum=zc.momentum, weight_decay=zc.weight_decay)
    stream = MemberStreams([len(task.train_idx)], [data_seed], zc.batch_size)
    net.train()
    steps = zc.total_steps(taskset.tasks)
    milestones = [round(f * steps) for f in zc.lr_drops or []]
    for step in range(steps):
        for group in opt.param_groups:  # lr_t = lr * gamma^(milestones passed)
            group["lr"] = zc.lr * zc.lr_gamma ** sum(step >= m for m in milestones)
        pos = stream.positions(step)[0]
        loss = F.cross_entropy(net(taskset.x[task.train_idx[pos]]), task.train_y[pos])
        opt.zero_grad()
        loss.backward()
        if zc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), zc.grad_clip)
        opt.step()
    return {k: v.detach() for k, v in net.state_dict().items()}


def assert_close(a: Tensor, b: Tensor, what: str) -> None:
    if a.is_floating_point():
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5, msg=lambda m: f"{what}: {m}")
    else:
        assert torch.equal(a, b), what


@pytest.mark.parametrize("arch", list(ARCHS))
def test_member_equals_net_trained_alone(arch):
    net_cls, image, vectorize = ARCHS[arch]
    zc = ZooConfig(**{**ZC.__dict__, "vectorize": vectorize})
    taskset = digits(train_tasks=2, unseen_tasks=1, image=image)
    build = partial(net_cls, input_shape=taskset.input_shape, num_classes=2)
    nets = [(t.id, s) for t in taskset.tasks for s in range(zc.seeds)]  # 3 tasks x 2 seeds, one population
    pop, rows = train_population(build, taskset, nets, zc)
    assert pop.vectorize == vectorize
    state = pop.state()
    assert [(r["task"], r["seed"]) for r in rows] == nets
    if arch.startswith("conv_bn"):  # BN statistics are per member and did move
        rm = state["1.running_mean"]
        assert rm.shape[0] == len(nets) and not torch.allclose(rm[0], rm[1]) and rm.abs().sum() > 0
    for k in (1, 4):  # members of different tasks and seeds
        t, s = nets[k]
        alone, _ = train_population(build, taskset, [(t, s)], zc)
        ref = plain_reference(build, taskset, t, s, zc)
        assert set(ref) == set(state)
        for name, v in state.items():
            assert_close(v[k], alone.state()[name][0], f"{arch} member {k} vs population of one, {name}")
            assert_close(v[k], ref[name], f"{arch} member {k} vs plain SGD loop, {name}")
    # not vacuous: training moved the weights, and members differ from each other
    init = init_member(build, member_seeds(zc.base_seed, *nets[0])[0]).state_dict()
    first = next(n for n in state if state[n].is_floating_point())
    assert not torch.allclose(state[first][0], init[first], atol=1e-3)
    assert not torch.allclose(state[first][0], state[first][1], atol=1e-3)


@pytest.mark.parametrize("arch", ["conv_bn", "resnet_mlp_stacked"])
def test_stacked_layout_trains_and_scores_like_vmap(arch):
    """Same weights, BN statistics and eval-mode accuracies (running statistics) either way."""
    net_cls, image, _ = ARCHS[arch]
    taskset = digits(train_tasks=2, unseen_tasks=1, image=image)
    build = partial(net_cls, input_shape=taskset.input_shape, num_classes=2)
    nets = [(t.id, s) for t in taskset.tasks for s in range(2)]
    out = {m: train_population(build, taskset, nets, ZooConfig(**{**ZC.__dict__, "vectorize": m}))
           for m in ("vmap", "stacked")}
    (vm, vrows), (st, srows) = out["vmap"], out["stacked"]
    assert (vm.vectorize, st.vectorize) == ("vmap", "stacked")
    for name, v in vm.state().items():  # float rounding differs by op order and grows through BN
        torch.testing.assert_close(st.state()[name], v, rtol=1e-3, atol=1e-4, msg=lambda m: f"{arch} {name}: {m}")
    for a, b in zip(vrows, srows):  # at most one sample's prediction flips at a decision boundary
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=0.01)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.02)
        assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-3)


def test_auto_stacks_what_it_can_and_names_what_it_cannot():
    taskset = digits(train_tasks=2, unseen_tasks=0)
    nets = [(0, 0), (1, 0)]
    gru = partial(ExplicitGRU, input_shape=taskset.input_shape, num_classes=2)
    mlp = partial(MLP, input_shape=taskset.input_shape, num_classes=2, hidden=8, depth=2)
    auto = ZooConfig(**{**ZC.__dict__, "epochs": 0.1, "vectorize": "auto"})
    assert train_population(mlp, taskset, nets, auto)[0].vectorize == "stacked"
    assert train_population(gru, taskset, nets, auto)[0].vectorize == "vmap"
    with pytest.raises(ConfigError, match=r"vectorize=stacked cannot run this net: module '<net>' \(ExplicitGRU\)"):
        train_population(gru, taskset, nets, ZooConfig(**{**ZC.__dict__, "vectorize": "stacked"}))


def test_clipping_is_per_member_and_loss_is_summed():
    """With a huge population-wide gradient from one member, the others still take their own step."""
    taskset = digits(train_tasks=2, unseen_tasks=0)
    build = partial(MLP, input_shape=taskset.input_shape, num_classes=2, hidden=8, depth=2)
    zc = ZooConfig(**{**ZC.__dict__, "lr": 0.5, "grad_clip": 0.01})
    nets = [(0, 0), (1, 0)]
    pop, _ = train_population(build, taskset, nets, zc)
    ref = plain_reference(build, taskset, 1, 0, zc)
    for name, v in pop.state().items():
        assert_close(v[1], ref[name], f"member 1 {name}")


def test_member_streams_do_not_depend_on_the_population():
    a = MemberStreams([10, 7, 30], [1, 2, 3], 4)
    b = MemberStreams([7], [2], 4)
    for step in range(12):  # crosses several epochs of the 7-sample task
        assert torch.equal(a.positions(step)[1], b.positions(step)[0])
    epoch0 = torch.cat([b.positions(0)[0], b.positions(1)[0][:3]])  # the first 7 positions: one permutation
    assert sorted(epoch0.tolist()) == list(range(7))


@pytest.mark.parametrize("vectorize", ["stacked", "vmap", "loop"])
def test_member_accuracy_is_each_nets_own_accuracy(vectorize):
    """evaluate() (one masked comparison summed per member, in chunks that cut tasks of different
    sizes and their padding; vmap and loop run only the members with samples left) gives what each
    net alone scores on its own task, accuracy and loss, and what one masked count over the whole test set gives."""
    taskset = digits(train_tasks=4, unseen_tasks=0)
    tasks = taskset.tasks
    assert len({len(t.test_idx) for t in tasks}) > 1  # tasks of different sizes: padding is exercised
    build = partial(MLP, input_shape=taskset.input_shape, num_classes=2, hidden=8, depth=2)
    nets = [(t.id, 0) for t in tasks]
    pop, rows = train_population(build, taskset, nets, ZooConfig(**{**ZC.__dict__, "epochs": 0.3,
                                                                    "vectorize": vectorize}))
    pad = torch.nn.utils.rnn.pad_sequence
    idx, y = pad([t.test_idx for t in tasks], batch_first=True), pad([t.test_y for t in tasks], batch_first=True)
    sizes = [len(t.test_idx) for t in tasks]
    acc, loss = pop.evaluate(idx, y, sizes, chunk=7)
    # a chunk in which the smallest task has no sample left (counts 0 for that member)
    assert torch.equal(pop.evaluate(idx, y, sizes, chunk=min(sizes))[0], acc)
    with torch.no_grad():
        logits = pop(taskset.x[idx])  # (K, n_max, 2): the replaced masked count, in one chunk
    valid = (torch.arange(idx.shape[1])[None] < torch.tensor(sizes)[:, None]).float()
    masked = ((logits.argmax(-1) == y).float() * valid).sum(1) / torch.tensor(sizes)
    state = pop.state()
    for k, t in enumerate(tasks):
        net = build()
        net.load_state_dict({name: v[k] for name, v in state.items()})
        with torch.no_grad():
            out = net(taskset.x[t.test_idx])
        alone = (out.argmax(-1) == t.test_y).float().mean()
        assert float(acc[k]) == float(alone) == float(masked[k]), (k, acc[k], alone, masked[k])
        assert float(loss[k]) == pytest.approx(float(F.cross_entropy(out, t.test_y)), rel=1e-5)
        assert round(float(acc[k]), 6) == rows[k]["test_acc"]  # the manifest's, from chunks of 512
    assert len(set(acc.tolist())) > 1  # not vacuous: the members score differently


def test_lr_schedule_and_steps_equal_a_plain_loop():
    """zoo.steps and zoo.lr_drops: a member equals the textbook loop that drops its lr by hand at the
    same step; the drop is not vacuous (the weights differ from training without it)."""
    taskset = digits(train_tasks=2, unseen_tasks=0)
    build = partial(MLP, input_shape=taskset.input_shape, num_classes=2, hidden=16, depth=3)
    zc = ZooConfig(**{**ZC.__dict__, "steps": 40, "lr_drops": [0.5], "lr_gamma": 0.01, "grad_clip": None})
    pop, rows = train_population(build, taskset, [(0, 0), (1, 1)], zc)
    assert rows[0]["steps"] == 40
    flat, _ = train_population(build, taskset, [(0, 0), (1, 1)], ZooConfig(**{**zc.__dict__, "lr_drops": None}))
    for k, (t, s) in enumerate([(0, 0), (1, 1)]):
        ref = plain_reference(build, taskset, t, s, zc)
        for name, v in pop.state().items():
            assert_close(v[k], ref[name], f"member {k} with lr drop vs plain loop, {name}")
    w = next(n for n in ref if n.endswith("weight"))
    assert not torch.allclose(pop.state()[w], flat.state()[w], atol=1e-4)
    # older zoos keep their identity: the new options count only when set
    assert not {"steps", "lr_drops", "lr_gamma"} & set(ZooConfig().training())
    assert {"steps": 40, "lr_drops": [0.5], "lr_gamma": 0.01}.items() <= zc.training().items()
