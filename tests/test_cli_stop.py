"""A job stopped by SIGTERM (SLURM preemption, a job time limit, ``timeout``) or SIGINT is a failure:
a non-zero exit (128 + the signal), one ``error:`` line that says it was stopped and that a rerun
resumes, and in a sweep a job record marked failed. Real runs in a subprocess, stopped mid-training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from tests.conftest import ROOT, TINY
from weightsim.sweep import read_jobs

LINE = ("stopped by SIGTERM before it finished: rerun the same command to resume (a zoo keeps the nets it "
        "finished)")
LONG = ("zoo.seeds=30", "zoo.epochs=200", "progress=false", "logger=none")  # minutes of training: stopped long before


def stop_when(tmp_path: Path, ready: Callable[[], bool], *args: str) -> tuple[int, str]:
    """Start weightsim-run with ``args`` (stdout to tmp_path/out.txt), wait until ``ready()`` (then 2 s
    more, well into the stage it waits for), send SIGTERM; returns (exit status, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", "from weightsim.cli import run_main; run_main()", *args],
                                cwd=ROOT, env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 600
            while not ready():
                assert proc.poll() is None, (tmp_path / "err.txt").read_text()[-2000:]
                assert time.monotonic() < deadline, "the run never reached the stage it was to be stopped in"
                time.sleep(0.5)
            time.sleep(2)
            assert proc.poll() is None, "the run finished before it was stopped: make it longer"
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    return rc, (tmp_path / "err.txt").read_text()


def stop_while_training(tmp_path: Path, zoo_json: Path, *args: str) -> tuple[int, str]:
    """SIGTERM once the run's zoo exists (the data is loaded and training starts)."""
    return stop_when(tmp_path, zoo_json.exists, *args)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_sigterm_ends_a_run_as_failed(tmp_path):
    run_dir = tmp_path / "run"
    rc, stderr = stop_while_training(tmp_path, run_dir / "zoo" / "zoo.json", *LONG, f"hydra.run.dir={run_dir}")
    assert rc == 128 + signal.SIGTERM, (rc, stderr[-2000:])
    assert error_lines(stderr) == [f"error: {LINE}"], stderr[-2000:]
    assert "Traceback" not in stderr
    assert not (run_dir / "report.json").exists()


def test_sigterm_marks_the_sweep_job_failed(tmp_path):
    sweep = tmp_path / "sweep"
    rc, stderr = stop_while_training(tmp_path, sweep / "0" / "zoo" / "zoo.json", "-m", *LONG,
                                     f"hydra.sweep.dir={sweep}")
    assert rc == 128 + signal.SIGTERM, (rc, stderr[-2000:])
    record = json.loads((sweep / "0" / "job.json").read_text())
    assert (record["status"], record["error"]) == ("failed", LINE)
    assert [(j["status"], j["error"]) for j in read_jobs(sweep)] == [("failed", LINE)]
    assert len(error_lines(stderr)) == 1 and error_lines(stderr)[0].endswith(f": {LINE}"), stderr[-2000:]


def test_sigterm_during_the_sweeps_htt_is_a_failure(tmp_path):
    """After the jobs, a sweep with sweep.htt=true runs HTT in the launching process (SLURM's time
    limit can end it there too): a stop there exits 128 + SIGTERM with one error line, not 0."""
    sweep = tmp_path / "sweep"
    quick_zoo = tuple(o for o in TINY if not o.startswith("protocol.n_permutations"))
    slow_htt = ("sweep.htt=true", "protocol.repeats=200", "protocol.n_permutations=99")  # minutes of fits
    out_txt = tmp_path / "out.txt"  # "htt <zoo>": the jobs are done, the sweep's HTT has begun
    rc, stderr = stop_when(tmp_path, lambda: "\nhtt " in out_txt.read_text(), "-m", *quick_zoo, *slow_htt,
                           f"hydra.sweep.dir={sweep}")
    assert rc == 128 + signal.SIGTERM, (rc, stderr[-2000:])
    assert error_lines(stderr) == [f"error: sweep {sweep}: {LINE}"], stderr[-2000:]
    assert not list(sweep.rglob("report.json"))
