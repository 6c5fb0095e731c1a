"""What a user sees for bad data and for silent changes: real commands in a subprocess.

Every weightsim error, also one raised inside Hydra's ``instantiate`` (which wraps it), is one
``error: ...`` line on stderr with exit code 2 and no traceback; every data warning is one
``warning: ...`` line that also lands in run.json and report.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli


def only_error_line(res) -> str:
    """The one ``error:`` line of a failed command; nothing else on stderr looks like an error."""
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "Error executing job" not in res.stderr, res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], res.stderr[-2000:]
    return lines[-1]


def zoo(tmp_path: Path, *overrides: str):
    return run_cli("zoo", *overrides, f"hydra.run.dir={tmp_path / 'run'}", "logger=none", "progress=false")


@pytest.mark.parametrize("dataset,layout,url", [
    ("cifar100", "cifar-100-python/ with the python pickles train, test, meta",
     "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    ("tiny_imagenet", "tiny-imagenet-200/ with wnids.txt", "http://cs231n.stanford.edu/tiny-imagenet-200.zip"),
])
def test_missing_data_dir(tmp_path, dataset, layout, url):
    line = only_error_line(zoo(tmp_path, f"dataset={dataset}", f"dataset.data_dir={tmp_path / 'nope'}"))
    assert line.startswith(f"error: {dataset}: no folder {tmp_path / 'nope'} (expected layout: {layout}")
    assert line.endswith(f"download {url} and unpack it there, or set dataset.download=true"), line


def test_npz_without_labels(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 3)), labels=np.arange(8) % 2)
    line = only_error_line(zoo(tmp_path, "dataset=arrays", f"dataset.data_dir={tmp_path / 'd.npz'}"))
    assert line == (f"error: arrays: {tmp_path / 'd.npz'} has no 'y' array (it has labels, x; expected a .npz with "
                    f"x (N, ...) and y (N,), optional x_test, y_test, class_names): save it with the names x and y, "
                    f"np.savez('data.npz', x=x, y=y)")


def test_npy_instead_of_npz(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((8, 3), dtype=np.float32))
    line = only_error_line(zoo(tmp_path, "dataset=arrays", f"dataset.data_dir={tmp_path / 'x.npy'}"))
    assert line == (f"error: arrays: {tmp_path / 'x.npy'} is a single array (8, 3) (.npy), not a .npz with x (N, ...) "
                    f"and y (N,), optional x_test, y_test, class_names: save inputs and labels together with "
                    f"np.savez('data.npz', x=x, y=y)")


def test_corrupt_image_in_image_folder(tmp_path):
    for c in ("a", "b", "c", "d"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for k in range(3):
            Image.new("L", (4, 4), 10 * k).save(tmp_path / "imgs" / c / f"{k}.png")
    (tmp_path / "imgs" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    line = only_error_line(zoo(tmp_path, "dataset=image_folder", f"dataset.data_dir={tmp_path / 'imgs'}"))
    assert line.startswith(f"error: image_folder: image {tmp_path / 'imgs' / 'b' / '1.png'} is unreadable (")
    assert line.endswith("): corrupt or truncated: replace or remove it"), line


def test_required_value_left_unset(tmp_path):
    line = only_error_line(zoo(tmp_path, "dataset=arrays"))  # data_dir: ??? in conf/dataset/arrays.yaml
    assert line == "error: dataset.data_dir is required and has no value: add dataset.data_dir=... to the command"


def test_config_composition_errors_are_one_line(tmp_path):
    """A key that is not in the config fails in Hydra's composition: Hydra's message, what to type
    instead included, as one error line before Hydra starts (exit 2, no job dir)."""
    line = only_error_line(zoo(tmp_path, "dataset.nosuch=1"))
    assert line == ("error: Could not override 'dataset.nosuch': Key 'nosuch' is not in struct: "
                    "to append to your config use +dataset.nosuch=1")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides,expected", [
    (("protocol.alpha=2",), "error: protocol.alpha=2.0 must lie in (0, 1)"),
    (("zoo.seeds=abc",), "error: Error merging override zoo.seeds=abc: Value 'abc' of type 'str' could not be "
                         "converted to Integer: set zoo.seeds to an integer"),
    (("zoo.seeds=4", "protocol.train_seeds=4"),
     "error: zoo.seeds=4 leaves no test seed after 4 training seeds per task (protocol.train_seeds): "
     "raise zoo.seeds above 4 or lower protocol.train_seeds"),
    (("-m", "zoo.seeds=5,abc"), "error: Error merging override zoo.seeds=abc: Value 'abc' of type 'str' could not be "
                                "converted to Integer: set zoo.seeds to an integer"),
])
def test_bad_settings_fail_before_any_net_trains(tmp_path, overrides, expected):
    """Every setting is checked on the composed config before the data loads or a net trains: a
    value out of range, a value of the wrong type (Hydra's), too few seeds for the protocol's split,
    and a bad value inside a multirun sweep (checked before the first job)."""
    res = run_cli("run", *overrides, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                  "logger=none", "progress=false")
    assert only_error_line(res) == expected
    assert not (tmp_path / "run" / "zoo").exists() and not (tmp_path / "sweep").exists()
    assert "nets" not in res.stdout, res.stdout[-2000:]


def test_sweep_launcher_without_the_extra_names_the_install(monkeypatch):
    """launcher=joblib (or slurm) without its Hydra plugin: one line naming pip install 'weightsim[sweep]',
    not Hydra's "Could not find 'hydra/launcher/joblib'". The plugin is hidden from importlib here."""
    import importlib.util

    from weightsim.config import check_launcher
    from weightsim.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("hydra_plugins.hydra_") else real(name, *a))
    with pytest.raises(ConfigError) as e:
        check_launcher(["zoo.seeds=3", "launcher=local,joblib"])
    assert str(e.value) == "launcher=joblib needs the launcher plugins of the [sweep] extra: pip install 'weightsim[sweep]'"
    check_launcher(["launcher=local"])  # Hydra's own launcher needs nothing


def test_data_warning_reaches_terminal_run_json_and_report(tmp_path):
    """A grayscale folder read with channels=3: one warning line, recorded in run.json and report.md; the
    default task counts of 10 classes give 2 training and 3 unseen tasks, so retrieval runs."""
    rng = np.random.default_rng(0)
    masks = rng.random((10, 6, 6)) < 0.5  # one pixel pattern per class: learnable in a few steps
    for c in range(10):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for k in range(8):
            a = np.clip(40 + 160 * masks[c] + rng.normal(0, 15, (6, 6)), 0, 255).astype(np.uint8)
            Image.fromarray(a, "L").save(tmp_path / "imgs" / f"c{c}" / f"{k}.png")
    out = tmp_path / "run"
    res = run_cli("run", "dataset=image_folder", f"dataset.data_dir={tmp_path / 'imgs'}", "dataset.channels=3",
                  "zoo.seeds=6", "zoo.epochs=40", "arch.hidden=8", "protocol.queries=2", "protocol.train_seeds=2",
                  "classifier.max_iter=100", "protocol.n_permutations=3", "progress=false", "logger=none",
                  f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    message = ("image_folder: all 80 images are grayscale (e.g. c0/0.png) but dataset.channels=3 reads each as 3 "
               "equal channels: set dataset.channels=1 (or null to detect it)")
    assert res.stderr.splitlines().count(f"warning: {message}") == 1, res.stderr[-3000:]
    assert message in json.loads((out / "run.json").read_text())["warnings"]
    assert f"- {message}" in (out / "report.md").read_text()
    roles = [t["role"] for t in json.loads((out / "zoo" / "zoo.json").read_text())["tasks"]]
    assert roles == ["train"] * 2 + ["unseen"] * 3
    assert "retrieval" in {r["protocol"] for r in json.loads((out / "report.json").read_text())}
