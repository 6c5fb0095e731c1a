"""Multirun sweeps that survive a failing job and end in HTT and the collected results.

Every job of a multirun (``-m``) records what it did in ``<job dir>/job.json``: its overrides, its
Hydra choices, its resolved config and ``status`` ok | failed (with the error). A failing job is
reported by name and the others go on. After the jobs, ``after_sweep`` (called by the CLI's Hydra
callback ``weightsim.cli.AfterSweep``):

1. with ``sweep.htt=true`` (the paper experiments): the jobs only trained their seed blocks; every
   zoo whose jobs all succeeded gets one HTT run in ``<sweep dir>/htt/<zoo name>/``, and with
   ``sweep.cross_from=<arch>`` a classifier trained on that arch's zoo is also tested on every other
   zoo (``htt/<train zoo>-on-<eval zoo>/``). An HTT run whose zoos have not changed since it ran
   is not repeated;
2. with ``sweep.collect=true``: ``weightsim-collect`` on the sweep dir (weightsim/report/collect.py);
3. writes ``<sweep dir>/sweep.json`` (every job and HTT run, with its status) and names every
   failure on stderr; the command then exits 1. Rerunning it completes only what is missing: the
   zoos skip the nets they have, HTT skips what is up to date.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from weightsim.files import atomic_write

JOB_FILE = "job.json"
SWEEP_FILE = "sweep.json"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_name() -> str:
    """How a running job names itself: its number and sweep subdir (the summary names it by what varies)."""
    hc = HydraConfig.get()
    return f"#{hc.job.num} ({hc.runtime.output_dir})"


def name_jobs(jobs: list[dict]) -> None:
    """Name each job by the overrides that differ between the sweep's jobs: ``arch=resnet5,zoo.seed_offset=25``."""
    keys = [o.partition("=")[0] for o in jobs[0]["overrides"]] if jobs else []
    varies = {k for k in keys if len({dict(o.partition("=")[::2] for o in j["overrides"]).get(k) for j in jobs}) > 1}
    for j in jobs:
        parts = [o for o in j["overrides"] if o.partition("=")[0] in varies]
        j["job"] = ",".join(parts) or f"#{j['num']}"


def record_job(cfg: DictConfig, app: str, status: str, error: str | None = None) -> Path:
    """Write ``<job dir>/job.json``: what this multirun job was and how it ended (``started`` until
    it ends: a job killed midway, by a cluster's time limit say, stays ``started`` and counts as failed)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    record = {"num": hc.job.num, "app": app, "status": status, "error": error,
              "overrides": list(hc.overrides.task), "choices": dict(hc.runtime.choices),
              "zoo_dir": str(cfg.get("zoo_dir")), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
              "config": OmegaConf.to_container(body, resolve=True)}
    atomic_write(run_dir / JOB_FILE, json.dumps(record, indent=1, default=str).encode())
    return run_dir / JOB_FILE


def read_jobs(sweep_dir: Path) -> list[dict]:
    """The job records under ``sweep_dir`` (one level down), in job order."""
    jobs = [{**json.loads(p.read_text()), "run_dir": p.parent.name} for p in sweep_dir.glob(f"*/{JOB_FILE}")]
    for j in jobs:
        if j["status"] == "started":
            j["status"], j["error"] = "failed", "did not finish (killed or timed out): see its log"
    return sorted(jobs, key=lambda j: j["num"])


def zoo_state(zoo_dir: str) -> list[str]:
    """What a zoo holds, as its completed populations (weights/*.json): changes when nets are added."""
    return sorted(p.name for p in (Path(zoo_dir) / "weights").glob("*.json"))


def htt_plan(jobs: list[dict], cross_from: str | None) -> list[dict]:
    """The HTT runs of a sweep: one per zoo its jobs trained, plus, with ``cross_from``, the classifier
    of that arch's zoo tested on every other zoo. Each: {label, zoo_dir, eval_zoo_dir, jobs, config}."""
    zoos: dict[str, list[dict]] = {}
    for j in jobs:
        zoos.setdefault(j["zoo_dir"], []).append(j)
    plan = [{"label": Path(z).name, "zoo_dir": z, "eval_zoo_dir": None, "train_arch": js[0]["choices"].get("arch"),
             "eval_arch": js[0]["choices"].get("arch"), "jobs": js} for z, js in zoos.items()]
    if cross_from:
        base = [p for p in plan if p["train_arch"] == cross_from]
        if not base:
            return plan + [{"label": f"{cross_from}-on-*", "zoo_dir": None, "eval_zoo_dir": None, "jobs": [],
                            "train_arch": cross_from, "eval_arch": None,
                            "missing": f"no job of this sweep trained arch={cross_from} (sweep.cross_from)"}]
        for b in base:
            plan += [{"label": f"{b['label']}-on-{p['label']}", "zoo_dir": b["zoo_dir"], "eval_zoo_dir": p["zoo_dir"],
                      "train_arch": cross_from, "eval_arch": p["eval_arch"], "jobs": b["jobs"] + p["jobs"]}
                     for p in plan if p["zoo_dir"] != b["zoo_dir"] and p.get("zoo_dir")]
    return plan


def run_one_htt(item: dict, sweep_dir: Path, htt_job: Callable[[DictConfig, Path], str | None]) -> dict:
    """Run (or skip, when up to date) one HTT of the plan; returns its record for sweep.json.
    ``htt_job(cfg, run_dir)`` runs the HTT stage and returns None, or the one-line error it ended with."""
    run_dir = sweep_dir / "htt" / item["label"]
    record = {k: item.get(k) for k in ("label", "zoo_dir", "eval_zoo_dir", "train_arch", "eval_arch")}
    record["run_dir"] = str(run_dir.relative_to(sweep_dir))
    failed = [j["job"] for j in item["jobs"] if j["status"] != "ok"]
    if item.get("missing") or failed:
        reason = item.get("missing") or f"job(s) failed: {'; '.join(failed)}"
        return {**record, "status": "skipped", "error": reason}
    state = {z: zoo_state(z) for z in filter(None, (item["zoo_dir"], item["eval_zoo_dir"]))}
    done = run_dir / "done.json"
    if done.exists() and json.loads(done.read_text()).get("zoos") == state:
        return {**record, "status": "ok", "note": "up to date (zoos unchanged since it ran)"}
    cfg = OmegaConf.create(item["jobs"][0]["config"])
    cfg.zoo_dir, cfg.eval_zoo_dir = item["zoo_dir"], item["eval_zoo_dir"]
    if cfg.get("logger") and "save_dir" in cfg.logger:
        cfg.logger.save_dir = str(run_dir)
    print(f"\nhtt {item['label']}" + (f" (classifier of {Path(cfg.zoo_dir).name})" if cfg.eval_zoo_dir else ""),
          flush=True)
    error = htt_job(cfg, run_dir)
    if error:
        return {**record, "status": "failed", "error": error}
    atomic_write(done, json.dumps({"zoos": state}).encode())
    return {**record, "status": "ok"}


def job_htt(job: dict) -> dict:
    """The record of the HTT a job ran itself (an ablation sweep over HTT options, say); ``variant``
    is the job's name (the overrides that differ between jobs), which collect shows beside the net."""
    cross = job["config"].get("eval_zoo_dir")
    return {"variant": job["job"], "zoo_dir": job["zoo_dir"], "eval_zoo_dir": cross,
            "train_arch": job["choices"].get("arch"), "eval_arch": Path(cross).name if cross else None,
            "run_dir": job["run_dir"], "status": job["status"], "error": job["error"]}


def after_sweep(sweep_dir: Path, sweep_cfg: DictConfig, experiment: str | None,
                htt_job: Callable[[DictConfig, Path], str | None], collect: Callable[[Path], dict]) -> int:
    """Everything after the jobs of a multirun; returns the number of failures. ``htt_job``: as in
    ``run_one_htt`` (the CLI's HTT stage; the library never imports the CLI); ``collect``: the sweep
    dir -> the paths written (weightsim.report.collect.collect, passed in: collect reads this
    module's SWEEP_FILE, so importing it here would close a circle)."""
    jobs = read_jobs(sweep_dir)
    name_jobs(jobs)
    if sweep_cfg.get("htt"):
        runs = [run_one_htt(item, sweep_dir, htt_job) for item in htt_plan(jobs, sweep_cfg.get("cross_from"))]
    else:  # each weightsim-htt / weightsim-run job ran its own HTT in its job dir
        runs = [job_htt(j) for j in jobs if j["app"] in ("htt", "run")]
    summary = {"experiment": experiment, "sweep_dir": str(sweep_dir),
               "jobs": [{k: j[k] for k in ("job", "num", "app", "status", "error", "zoo_dir", "choices")}
                        for j in jobs],
               "htt": runs}
    atomic_write(sweep_dir / SWEEP_FILE, json.dumps(summary, indent=1).encode())
    if sweep_cfg.get("collect") and any(r["status"] == "ok" for r in runs):
        paths = collect(sweep_dir)
        print(f"\ncollected: {paths['md']}  (table.csv, figure.png beside it)")
    failures = [f"job {j['job']}: {j['error']}" for j in jobs if j["status"] != "ok"]
    if sweep_cfg.get("htt"):  # (otherwise a failed HTT is a failed job, named above)
        failures += [f"htt {r['label']}: {r['status']}: {r['error']}" for r in runs if r["status"] != "ok"]
    ok_jobs = sum(j["status"] == "ok" for j in jobs)
    print(f"\nsweep {sweep_dir}: {ok_jobs} of {len(jobs)} jobs ok"
          + (f", {sum(r['status'] == 'ok' for r in runs)} of {len(runs)} HTT runs ok" if runs else ""))
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    if failures:
        print("rerun the same command to complete what is missing (finished nets and HTT runs are kept)",
              file=sys.stderr)
    return len(failures)


# -- GPUs of a joblib sweep -------------------------------------------------------------------------
_pinned: list = []  # this worker process's claimed GPU: [open lock file] (held until the process ends)


def gpu_order(job_num: int, count: int) -> list[int]:
    """The GPUs (0-based among the visible ones) a job tries, in order: its own, ``job_num mod count``,
    then the next ones round the ring; [] without GPUs. E.g. gpu_order(5, 4) == [1, 2, 3, 0]."""
    return [(job_num + i) % count for i in range(count)]


def visible_devices(chosen: int, current: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES value that leaves only visible GPU ``chosen``: its entry in the
    ``current`` value when one is set (``"2,3"``, chosen 1 -> ``"3"``), else its index."""
    entries = [e.strip() for e in current.split(",") if e.strip()] if current else []
    return entries[chosen] if entries else str(chosen)


def claim_gpu(lock_dir: Path, job_num: int, count: int) -> tuple[int, object | None]:
    """Claim a GPU for this process: the first of ``gpu_order(job_num, count)`` whose lock file
    ``lock_dir/gpu<i>.lock`` no other process holds (flock, released when the process ends);
    when every GPU is held (more jobs at once than GPUs) the job's own, shared. Returns (GPU, the
    open lock file or None)."""
    import fcntl

    lock_dir.mkdir(parents=True, exist_ok=True)
    order = gpu_order(job_num, count)
    for i in order:
        f = open(lock_dir / f"gpu{i}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return i, f
        except OSError:
            f.close()
    return order[0], None


def pin_joblib_gpu() -> str | None:
    """In a ``launcher=joblib`` job on a machine with several GPUs: pin this worker process to one GPU
    by setting CUDA_VISIBLE_DEVICES before CUDA starts, so that the jobs running at once use distinct
    GPUs (``n_jobs`` at most the GPU count). A worker keeps its GPU for every later job it runs.
    Returns the worker's CUDA_VISIBLE_DEVICES, or None: not a joblib job, fewer than 2 GPUs, CUDA
    already started."""
    hc = HydraConfig.get()
    if not in_multirun() or "joblib" not in str(hc.launcher.get("_target_", "")):
        return None
    if _pinned:  # an earlier job of this worker process claimed its GPU
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    import torch

    if torch.cuda.is_initialized():
        return None
    count = torch.cuda.device_count()  # NVML: does not start CUDA, so the variable below still counts
    if count < 2:
        return None
    gpu, lock = claim_gpu(Path(hc.sweep.dir) / ".gpus", hc.job.num, count)
    _pinned.append(lock)
    os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return os.environ["CUDA_VISIBLE_DEVICES"]
