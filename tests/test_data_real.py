"""Integration: the real dataset copies in $WEIGHTSIM_SHARED_DATA (default: the folder shared/data beside
the repository), counts as in its README. Skipped, with the reason, when that folder is absent."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from weightsim.data.cifar100 import cifar100, read_split
from weightsim.data.download import file_digest
from weightsim.data.namedata import NAME_FILES_SHA256, decode, namedata
from weightsim.data.tiny_imagenet import tiny_imagenet
from weightsim.errors import WeightsimWarning

pytestmark = pytest.mark.data

SHARED = Path(os.environ.get("WEIGHTSIM_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def folder(rel: str) -> Path:
    p = SHARED / rel
    if not p.is_dir():
        pytest.skip(f"real data {p} is absent (set WEIGHTSIM_SHARED_DATA to the folder of shared data)")
    return p


def test_cifar100_partial_counts():
    root = folder("cifar-100-python-partial/cifar-100-python")
    (xtr, ytr), (xte, yte) = read_split(root / "train"), read_split(root / "test")
    assert xtr.shape == (1117, 3, 32, 32) and xte.shape == (916, 3, 32, 32)
    assert set(ytr.tolist()) == set(range(100))
    per_class = torch.bincount(torch.as_tensor(ytr), minlength=100)
    assert per_class.min() == 5 and per_class.max() == 22  # README: 5-22 per class in train
    ts = cifar100(str(root))  # paper default: 50 tasks of classes (2i, 2i+1), 40 seen + 10 unseen
    assert ts.x.shape == (1117 + 916, 3, 32, 32) and len(ts.tasks) == 50
    assert sum(len(t.train_idx) for t in ts.tasks) == 1117 and sum(len(t.test_idx) for t in ts.tasks) == 916
    assert ts.tasks[0].class_names == ["apple", "aquarium_fish"] and ts.tasks[49].classes == [98, 99]
    assert abs(float(ts.x.mean())) < 0.1 and abs(float(ts.x.std()) - 1) < 0.1  # the constants fit


def test_tiny_imagenet_subset40_counts():
    root = folder("tiny-imagenet-200-subset40")
    ts = tiny_imagenet(str(root), train_tasks=8, unseen_tasks=2, size=32)
    assert ts.x.shape == (40 * 550, 3, 32, 32) and len(ts.tasks) == 10
    assert torch.equal(torch.bincount(ts.y, minlength=40), torch.full((40,), 550))
    for t in ts.tasks:  # 500 train and 50 val images per class
        assert torch.equal(torch.bincount(t.train_y), torch.full((4,), 500))
        assert torch.equal(torch.bincount(t.test_y), torch.full((4,), 50))
    assert ts.tasks[0].class_names[0].startswith("n02124075")  # first wnid of wnids.txt
    assert abs(float(ts.x.mean())) < 0.2 and abs(float(ts.x.std()) - 1) < 0.2


def test_namedata_counts_and_checksums():
    root = folder("names")
    for name, digest in NAME_FILES_SHA256.items():
        assert file_digest(root / name) == digest, name
    with warnings.catch_warnings():  # the official data needs no warning: no name is cut or emptied
        warnings.simplefilter("error", WeightsimWarning)
        ts = namedata(str(root), train_tasks=9, unseen_tasks=0)
    assert ts.x.shape == (20074, 20) and ts.info["vocab_size"] == 59 and ts.info["max_len"] == 20
    counts = dict(zip([n for t in ts.tasks for n in t.class_names], torch.bincount(ts.y).tolist()))
    assert len(counts) == 18 and counts["English"] == 3668 and counts["Russian"] == 9408 and counts["Vietnamese"] == 73
    assert [t.class_names for t in ts.tasks][:2] == [["Arabic", "Chinese"], ["Czech", "Dutch"]]
    assert decode(ts.x[0]) == (root / "Arabic.txt").read_text(encoding="utf-8").splitlines()[0]
