"""The zoo CLI as a user runs it, in real subprocesses: SIGKILL mid-way and rerun, seed-block
multirun, and `weightsim-zoo verify`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_zoo_store import snapshot
from weightsim.zoo.store import ZooReader
from weightsim.zoo.verify import verify_zoo

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from weightsim.cli import zoo_main; zoo_main()"]
SMALL = ["dataset.train_tasks=3", "dataset.unseen_tasks=1", "arch.hidden=16", "arch.depth=3", "zoo.seeds=3",
         "zoo.population_size=2", "zoo.epochs=2", "zoo.accelerator=cpu", "logger=none", "progress=false"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "WANDB_MODE": "offline"}


def zoo_cmd(zoo_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*CLI, *SMALL, f"zoo_dir={zoo_dir}", f"hydra.run.dir={run_dir}", *extra]


def test_sigkill_midway_then_rerun_equals_uninterrupted_run(tmp_path):
    ref = subprocess.run(zoo_cmd(tmp_path / "ref", tmp_path / "r0"), env=env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]

    zoo = tmp_path / "zoo"
    proc = subprocess.Popen(zoo_cmd(zoo, tmp_path / "r1"), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((zoo / "weights").glob("*.json"))) >= 2:  # two of six populations done
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the generation ended before the test could kill it"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    pieces = len(list((zoo / "weights").glob("*.json")))
    assert 2 <= pieces < 6, pieces
    assert verify_zoo(zoo).ok, verify_zoo(zoo).text()  # a killed zoo still loads and verifies
    assert len(ZooReader(zoo).rows) == 2 * pieces

    again = subprocess.run(zoo_cmd(zoo, tmp_path / "r2"), env=env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert snapshot(zoo) == snapshot(tmp_path / "ref")
    rows = ZooReader(zoo).rows
    keys = [(r["task"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12
    assert not [f for f in (zoo / "weights").iterdir() if f.name.startswith(".")]  # rerun left no temp files


def test_concurrent_jobs_with_overlapping_seed_blocks_make_one_zoo_without_duplicates(tmp_path):
    """Seed blocks [0, 3) and [1, 4) trained at the same time into one zoo: every net once."""
    zoo = tmp_path / "zoo"
    args = [a for a in SMALL if not a.startswith("zoo.seeds")]
    jobs = [subprocess.Popen([*CLI, *args, "zoo.seeds=3", f"zoo.seed_offset={o}", f"zoo_dir={zoo}",
                              f"hydra.run.dir={tmp_path / f'r{o}'}"], env=env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for o in (0, 1)]
    for j in jobs:
        _, err = j.communicate(timeout=600)
        assert j.returncode == 0, err[-2000:]
    keys = [(r["task"], r["seed"]) for r in ZooReader(zoo).rows]  # refuses a net held twice
    assert sorted(keys) == [(t, s) for t in range(4) for s in range(4)]
    assert verify_zoo(zoo).ok


def test_multirun_of_two_seed_blocks_fills_one_zoo_then_verify_and_refuse(tmp_path):
    zoo = tmp_path / "zoo"
    cmd = [*CLI, "-m", *[a for a in SMALL if not a.startswith("zoo.seeds")], "zoo.seeds=2",
           "zoo.seed_offset=0,2", f"zoo_dir={zoo}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    res = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(list((tmp_path / "sweep").glob("[01]/.hydra"))) == 2  # two jobs
    rep = verify_zoo(zoo)
    assert rep.ok, rep.text()
    assert rep.coverage() == "4 tasks x seeds [0, 4): complete"
    assert sorted((r["task"], r["seed"]) for r in ZooReader(zoo).rows) == [(t, s) for t in range(4) for s in range(4)]

    # `weightsim-zoo verify`: exit 0 on the sound zoo, 1 naming a truncated file
    ok = subprocess.run([*CLI, "verify", f"zoo_dir={zoo}"], env=env(), capture_output=True, text=True)
    assert ok.returncode == 0 and "complete" in ok.stdout and "OK:" in ok.stdout, ok.stdout + ok.stderr
    f = sorted((zoo / "weights").glob("*.safetensors"))[1]
    f.write_bytes(f.read_bytes()[:100])
    bad = subprocess.run([*CLI, "verify", f"zoo_dir={zoo}"], env=env(), capture_output=True, text=True)
    assert bad.returncode == 1 and f"{f}: truncated" in bad.stdout, bad.stdout + bad.stderr

    # training into it with another architecture is refused with one line naming both
    res = subprocess.run(zoo_cmd(zoo, tmp_path / "run2", "arch.depth=2"), env=env(), capture_output=True,
                         text=True)
    assert res.returncode == 2, res.stderr[-2000:]
    line = res.stderr.strip().splitlines()[-1]
    assert "refused" in line and '"depth": 3' in line and '"depth": 2' in line, line


@pytest.mark.slow
def test_wandb_multirun_one_finished_run_per_job(tmp_path):
    """logger=wandb (offline) under a joblib multirun: each job has its own run, finished at job end,
    and the jobs share one zoo through a deterministic zoo_dir."""
    cmd = [*CLI, "-m", "launcher=joblib", *[a for a in SMALL if not a.startswith(("zoo.seeds", "logger"))],
           "zoo.seeds=1", "zoo.seed_offset=0,1", "logger=wandb",
           f"zoo_dir={tmp_path}/zoos/" + "${hydra:runtime.choices.dataset}-${hydra:runtime.choices.arch}",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    res = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    runs = sorted((tmp_path / "sweep").glob("*/wandb/offline-run-*"))
    assert len(runs) == 2 and runs[0].name != runs[1].name
    for run in runs:
        assert "finishing run" in (run / "logs" / "debug.log").read_text()
    assert verify_zoo(tmp_path / "zoos" / "digits-mlp").coverage() == "4 tasks x seeds [0, 2): complete"


def test_unknown_storage_dtype_is_one_error_line_before_training(tmp_path):
    out = subprocess.run(zoo_cmd(tmp_path / "zoo", tmp_path / "r", "zoo.dtype=float64"), env=env(),
                         capture_output=True, text=True)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines == ["error: zoo.dtype='float64': choose from float32, bfloat16, float16 (the dtype the zoo "
                     "stores its weights in; training is float32 either way)"], out.stderr[-2000:]
    assert not (tmp_path / "zoo").exists()  # nothing trained, nothing written
