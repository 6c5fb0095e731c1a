"""A zoo as every measure reads it: the template net, the nets, their stacked weights, the tasks
they were trained on, and a batched forward of many nets that can capture hidden activations.

    zoo = Zoo("zoos/digits/mlp")
    rows = zoo.select(role="train", diverged=False)
    logits, acts = zoo.forward(rows[:64], x, capture=hidden_layers(zoo.template))

Layer names are the template's module names (``dict(net.named_modules())``): ``"2"`` for the
first ReLU of an MLP, ``"0.body.1"`` for the activation of a PlainNet's first unit, ``"rnn"`` for
a GRU's output sequence. Nothing in a zoo is executed: nets come only from ``weightsim.nets``
builders, datasets only from ``weightsim.data`` loaders, weights only from safetensors.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from torch import Tensor, nn

from weightsim.data.common import ENV_DATA
from weightsim.data.tasks import TaskSet
from weightsim.errors import ConfigError, WeightsimError, ZooError, in_cause_chain
from weightsim.nets.build import build_net
from weightsim.nets.spec import ELEMENTWISE
from weightsim.zoo.activations import hidden_layers, zoo_activations
from weightsim.zoo.many import ManyNets
from weightsim.zoo.store import IMPORTED, ZooReader




class Zoo:
    """A read-only view of the zoo directory ``root`` (what ``weightsim-zoo`` wrote). verify: each
    weight file is checked against its manifest SHA-256 when it is read (``ZooReader``)."""

    def __init__(self, root: str | Path, verify: bool = True):
        self.reader = ZooReader(root, verify)
        self.root, self.head = self.reader.root, self.reader.head

    # -- what the zoo holds --------------------------------------------------------------------
    @cached_property
    def template(self) -> nn.Module:
        """The architecture, rebuilt from zoo.json (allow-listed builders only), in eval mode."""
        h = self.head
        return build_net(h["arch"]["config"], h["input_shape"], h["num_classes"]).eval()

    @property
    def rows(self) -> list[dict]:
        """Manifest rows, sorted by (task, seed): task, seed, role, classes, diverged, accuracies, ..."""
        return self.reader.rows

    def select(self, task: int | Iterable[int] | None = None, role: str | None = None,
               diverged: bool | None = None) -> list[dict]:
        """The rows of ``task`` (an id or several), ``role`` ("train" | "unseen") and ``diverged``
        (False: usable nets only); None matches everything."""
        tasks = None if task is None else {task} if isinstance(task, int) else set(task)
        return [r for r in self.rows if (tasks is None or r["task"] in tasks)
                and (role is None or r["role"] == role) and (diverged is None or r["diverged"] == diverged)]

    def stacked(self, rows: list[dict]) -> dict[str, Tensor]:
        """Weights (parameters and buffers) of ``rows``, in their order: name -> (N, *shape)."""
        return self.reader.load(rows)

    def nets(self, rows: list[dict]) -> list[nn.Module]:
        """The nets of ``rows`` as modules holding their weights, in eval mode."""
        state = self.stacked(rows)
        out = []
        for i in range(len(rows)):
            net = copy.deepcopy(self.template)
            own = net.state_dict()  # keeps the version metadata BatchNorm reads when loading
            own.update({k: v[i] for k, v in state.items()})
            net.load_state_dict(own)
            out.append(net.eval())
        return out

    def net(self, row: dict) -> nn.Module:
        """The net of one manifest row, holding its weights, in eval mode."""
        return self.nets([row])[0]

    # -- many nets at once ---------------------------------------------------------------------
    def forward(self, rows: list[dict], x: Tensor, capture: Iterable[str] = (),
                vectorize: str = "auto") -> tuple[Tensor, dict[str, Tensor]]:
        """The nets of ``rows`` (eval mode: BN uses its running statistics) on one input batch.

        x: (B, *input_shape) on any device -> logits (N, B, C) and, per layer name in ``capture``,
        its output (N, B, ...) (conv: (N, B, C, H, W)). Runs the population's many-net forward
        (``ManyNets``: stacked where the net allows, else vmap; ``vectorize`` picks one); memory
        grows with N x B, so pass rows in chunks for large zoos. No gradients are kept.
        """
        capture = tuple(capture)
        layers = dict(self.template.named_modules())
        unknown = [n for n in capture if n not in layers or n == ""]
        if unknown:
            raise ConfigError(f"no layer {unknown[0]!r} in the net of zoo {self.root} (arch "
                              f"'{self.head['arch'].get('name')}'); its hidden layers: "
                              f"{', '.join(hidden_layers(self.template)) or 'none'}")
        state = {k: v.to(x.device) for k, v in self.stacked(rows).items()}
        names = dict(self.template.named_parameters())
        params = {k: v for k, v in state.items() if k in names}
        buffers = {k: v for k, v in state.items() if k not in names}
        many = ManyNets(self.template, len(rows), tuple(x.shape[1:]), vectorize)
        with torch.no_grad():
            return many(params, buffers, x.expand(len(rows), *x.shape), capture)

    def activations(self, rows: list[dict], x: Tensor, layers: list[str] | None = None, where: str = "post",
                    budget_mb: float = 256.0, key: str = "measure.cka") -> dict[str, Tensor]:
        """{layer: (len(rows), samples, neurons) float32}: the nets ``rows`` on the probe x (B, *input_shape),
        streamed in blocks of nets within ``budget_mb`` (weightsim/zoo/activations.py; ``layers``:
        default every hidden layer at ``where`` and the logits; ``key``: the settings its messages name)."""
        return zoo_activations(self, rows, x, layers, where, budget_mb, key)

    # -- the data ------------------------------------------------------------------------------
    @property
    def has_data(self) -> bool:
        """False for a zoo of imported nets (``weightsim-zoo import``): it knows no dataset."""
        return self.head["dataset"].get("name") != IMPORTED

    def taskset(self, data_dir: str | Path | None = None) -> TaskSet:
        """The tasks the nets were trained on, rebuilt from the dataset config in zoo.json.

        data_dir: where the dataset lies (the CLI's ``dataset.data_dir``); None: the loader's default
        (``$WEIGHTSIM_DATA/<folder>``, else ``./data/<folder>``). The rebuilt tasks must have the
        zoo's fingerprint (same classes, sample counts, shapes), else a ZooError says so.
        """
        ds = self.head["dataset"]
        if not self.has_data:
            raise ZooError(f"zoo {self.root} holds imported nets and no dataset: what needs the nets' data (activation "
                           f"measures, loss barriers) cannot run on it; the weight measures can")
        name, cfg = ds.get("name"), dict(ds.get("config") or {})
        target = str(cfg.get("_target_", ""))
        if not target.startswith("weightsim.data."):
            raise ZooError(f"zoo {self.root}: dataset _target_ '{target}' is outside weightsim.data: refused")
        takes = inspect.signature(get_method(target)).parameters
        if data_dir is not None:
            if "data_dir" not in takes:
                raise ConfigError(f"dataset '{name}' of zoo {self.root} takes no data_dir (its data is "
                                  f"built in): call taskset() without one")
            cfg["data_dir"] = str(data_dir)
        try:
            taskset = instantiate(cfg)
        except InstantiationException as e:
            inner = in_cause_chain(e, WeightsimError)
            if inner is None:
                raise
            where = (f"from data_dir={data_dir}" if data_dir is not None else
                     f"without a data_dir (the loader's default: ${ENV_DATA}/<folder>, else ./data/<folder>)")
            raise type(inner)(f"zoo {self.root} was trained on dataset '{name}', which does not load {where}: "
                              f"{inner}; pass Zoo.taskset(data_dir=<the dataset's folder or file>)") from None
        want = ds.get("fingerprint")
        if want is not None and taskset.fingerprint() != want:
            raise ZooError(f"zoo {self.root}: dataset '{name}' at "
                           f"{data_dir if data_dir is not None else 'its default location'} gives other tasks "
                           f"(fingerprint {taskset.fingerprint()}) than the zoo was trained on ({want}): pass "
                           f"data_dir= of the data the zoo was trained on (a partial copy has other sample counts)")
        return taskset
