"""What HTT tests: the usable nets of the train and eval zoos (``Study``, fixed before any split)
and, per repeat, which of them train the classifier, are tested, query or fill the gallery (``Split``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from weightsim.errors import ConfigError, ZooError, warn
from weightsim.htt.settings import ProtocolConfig
from weightsim.htt.protocols import random_order, retrieval_split, split_seeds
from weightsim.zoo.view import Zoo


def usable_rows(zoo: Zoo) -> tuple[list[dict], int]:
    rows = zoo.select(diverged=False)
    return rows, len(zoo.rows) - len(rows)



@dataclass
class Study:
    """The usable (not diverged) nets HTT tests. seen_a trains the classifier (train zoo), seen_b is
    tested (the eval zoo's nets of the same tasks; seen_a itself unless cross-network), unseen are
    the eval zoo's unseen-task nets for retrieval (empty when retrieval does not run)."""

    train_zoo: Zoo
    eval_zoo: Zoo
    seen_a: list[dict]
    seen_b: list[dict]
    unseen: list[dict]
    tasks: list[int]
    n_train: int  # training seeds per task
    diverged: int

    @property
    def cross(self) -> bool:
        return self.eval_zoo is not self.train_zoo


def open_study(zoo_dir: str, eval_zoo_dir: str | None, pc: ProtocolConfig) -> Study:
    train_zoo = Zoo(zoo_dir, pc.verify)
    eval_zoo = Zoo(eval_zoo_dir, pc.verify) if eval_zoo_dir else train_zoo
    rows_a, div_a = usable_rows(train_zoo)
    rows_b, div_b = usable_rows(eval_zoo) if eval_zoo is not train_zoo else (rows_a, 0)
    seen_a = [r for r in rows_a if r["role"] == "train"]
    seen_b = [r for r in rows_b if r["role"] == "train"]
    tasks = sorted({r["task"] for r in seen_a})
    if len(tasks) < 2:
        raise ZooError(f"zoo {zoo_dir} has {len(tasks)} usable training task(s); HTT needs at least 2")
    missing = {r["task"] for r in seen_b} - set(tasks)
    if missing:
        raise ZooError(f"eval zoo {eval_zoo_dir} has training tasks {sorted(missing)} that {zoo_dir} lacks")
    if pc.tasks is not None:  # a subset of the training tasks (at least 2: check_protocol)
        if unknown := sorted(set(pc.tasks) - set(tasks)):
            raise ConfigError(f"protocol.tasks names task(s) {unknown} that zoo {zoo_dir} has no usable training nets "
                              f"of: choose from {tasks}")
        tasks = sorted(set(pc.tasks))
    n_train, tasks = training_seeds(train_zoo, seen_a, tasks, pc)
    seen_a, seen_b = ([r for r in rows if r["task"] in tasks] for rows in (seen_a, seen_b))
    unseen = retrieval_nets([r for r in rows_b if r["role"] == "unseen"], pc)
    lost = [r for r in eval_zoo.rows if r["role"] == "unseen" and r["diverged"]]
    if unseen and lost:  # fewer queries or gallery nets for these tasks
        which = ", ".join(f"task {t}: {sum(r['task'] == t for r in lost)} of "
                          f"{sum(r['task'] == t for r in eval_zoo.rows)}" for t in sorted({r["task"] for r in lost}))
        warn(f"diverged nets left out of retrieval ({which}): those unseen tasks query and fill the gallery with "
             f"their usable seeds only (the queries are the protocol.queries={pc.queries} lowest usable seeds)")
    return Study(train_zoo, eval_zoo, seen_a, seen_b, unseen, tasks, n_train, div_a + div_b)


def training_seeds(zoo: Zoo, seen: list[dict], tasks: list[int], pc: ProtocolConfig) -> tuple[int, list[int]]:
    """Training seeds per task and the tasks HTT keeps. short_tasks=lower: every task, with
    protocol.train_seeds or train_fraction of the smallest task's usable nets; short_tasks=drop:
    protocol.train_seeds or train_fraction of the smallest task's stored nets, leaving out the tasks
    with too few usable nets to train and test.
    Warns when diverged nets changed the count or the tasks."""
    if pc.train_seeds is not None and pc.train_seeds < 1:
        raise ConfigError(f"protocol.train_seeds={pc.train_seeds} must be >= 1")
    usable = {t: sum(r["task"] == t for r in seen) for t in tasks}
    stored = {t: sum(r["task"] == t and r["role"] == "train" for r in zoo.rows) for t in tasks}
    n_all = pc.train_seeds or max(1, int(round(pc.train_fraction * min(stored.values()))))
    lost = ", ".join(f"task {t}: {stored[t] - usable[t]} of {stored[t]}" for t in tasks if stored[t] > usable[t])
    if pc.short_tasks == "drop":
        kept = [t for t in tasks if usable[t] > n_all]  # n_all train it, at least one is tested
        if len(kept) < 2:
            raise ZooError(f"zoo {zoo.root}: only {len(kept)} training task(s) keep more than {n_all} usable nets "
                           f"(diverged: {lost}); HTT needs 2: set protocol.short_tasks=lower or retrain the zoo")
        if dropped := [t for t in tasks if t not in kept]:
            warn(f"diverged nets left out ({lost}) left task(s) {', '.join(map(str, dropped))} with {n_all} or fewer "
                 f"usable nets: left out of HTT (protocol.short_tasks=drop), {len(kept)} training tasks remain with "
                 f"{n_all} training seeds each")
        return n_all, kept
    if pc.train_seeds is not None:  # lower with an exact count: the split names a task that lacks it
        return pc.train_seeds, tasks
    n_train = max(1, int(round(pc.train_fraction * min(usable.values()))))
    if short := [t for t in tasks if usable[t] <= n_train]:
        raise ZooError(f"zoo {zoo.root}: task(s) {', '.join(map(str, short))} keep {min(usable.values())} usable "
                       f"net(s) (diverged: {lost}), too few to train and test: set protocol.short_tasks=drop to "
                       f"leave them out of HTT, or retrain the zoo")
    if n_train != n_all:
        warn(f"diverged nets left out ({lost}) lowered the training seeds per task from {n_all} to {n_train} "
             f"for every task (protocol.train_fraction={pc.train_fraction} of the smallest task's "
             f"{min(usable.values())} usable nets); set protocol.train_seeds to choose the count, or "
             f"protocol.short_tasks=drop to leave the short tasks out instead")
    return n_train, tasks


def retrieval_nets(unseen: list[dict], pc: ProtocolConfig) -> list[dict]:
    """The unseen-task nets retrieval runs on, or [] with a warning that says why it is skipped."""
    n_tasks = len({r["task"] for r in unseen})
    if "retrieval" not in pc.protocols:
        if n_tasks:
            warn(f"retrieval skipped: protocol.protocols={list(pc.protocols)} leaves it out, although the zoo "
                 f"has {n_tasks} unseen task(s); add retrieval to protocol.protocols to run it")
        return []
    usable = {t: sum(r["task"] == t for r in unseen) for t in sorted({r["task"] for r in unseen})}
    if pc.short_tasks == "drop" and (short := [t for t, n in usable.items() if n <= pc.queries]):
        warn(f"unseen task(s) {', '.join(map(str, short))} keep {pc.queries} or fewer usable nets (protocol.queries="
             f"{pc.queries} query, at least one fills the gallery): left out of retrieval (protocol.short_tasks=drop)")
        unseen = [r for r in unseen if r["task"] not in short]
        n_tasks = len(usable) - len(short)
    if n_tasks < 2:
        warn(f"retrieval skipped: the zoo has {n_tasks} unseen task(s) with usable nets and retrieval needs at "
             f"least 2 (with one, every gallery net matches); raise dataset.unseen_tasks and train the zoo again")
        return []
    return unseen


# -- one split of the nets -----------------------------------------------------------------------
@dataclass
class Split:
    """Repeat ``repeat``'s nets per role: training nets (from seen_a) and their labels, test nets
    (from seen_b), and the unseen nets' query and gallery indices (into study.unseen)."""

    repeat: int
    train: list[dict]
    y_train: Tensor
    test: list[dict]
    y_test: Tensor
    queries: list[int]
    gallery: list[int]


def make_split(study: Study, pc: ProtocolConfig, repeat: int, seed: int) -> Split:
    """Repeat 0: the paper's fixed split (lowest seeds train / are queries); repeat r > 0: the same
    counts per task, chosen by a seeded random order of the seeds."""
    key = random_order(seed, repeat) if repeat else None
    tr, _ = split_seeds(study.seen_a, study.n_train, key=key)
    _, te = split_seeds(study.seen_b, study.n_train, key=key)
    label = {t: i for i, t in enumerate(study.tasks)}
    train, test = [study.seen_a[i] for i in tr], [study.seen_b[i] for i in te]
    q, g = retrieval_split(study.unseen, pc.queries, key) if study.unseen else ([], [])
    return Split(repeat, train, torch.tensor([label[r["task"]] for r in train]), test,
                 torch.tensor([label[r["task"]] for r in test]), q, g)


def retrieval_chance(study: Study, split: Split) -> float | None:
    """Rank-1 of retrieval by chance: a query's nearest gallery net drawn at random is of its task
    with probability (its task's gallery nets) / (gallery nets), averaged over the queries (1 / unseen
    tasks when every task has as many). None without retrieval."""
    if not split.queries or not split.gallery:
        return None
    tasks = [study.unseen[i]["task"] for i in split.gallery]
    return sum(tasks.count(study.unseen[q]["task"]) for q in split.queries) / (len(split.queries) * len(tasks))
