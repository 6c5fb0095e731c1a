"""Thin Hydra entry points around the stages (weightsim/stages/): weightsim-zoo, weightsim-htt,
weightsim-run (zoo then HTT, one run dir), weightsim-compare (every compare measure on a zoo),
weightsim-recover (Expand-and-Cluster), weightsim-collect (an experiment sweep's table and figure).
Here: the command-line checks before Hydra starts, the job's warnings, stop signals and errors, and
the sweep's end (AfterSweep)."""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path
from typing import Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from weightsim.config import APPS, CONF, check_composition, check_launcher, choices, register_help
from weightsim.errors import WeightsimError, WeightsimWarning, in_cause_chain
from weightsim.stages import register_configs
from weightsim.stages.check import check_config
from weightsim.stages.htt import htt_stage
from weightsim.stages.job import finish, make_logger
from weightsim.stages.zoo import import_stage, zoo_stage
from weightsim.sweep import after_sweep, in_multirun, job_name, pin_joblib_gpu, record_job

GROUPS = ("dataset", "arch", "zoo", "chains", "classifier", "protocol", "logger", "launcher", "experiment", "scale",
          "compare", "trainer")


# settings that were renamed or removed: an old command line gets the new spelling, not Hydra's
# "Key ... is not in struct"
RENAMED = {"chains.fold_bn": "chains.bn=fold (BN handling is chains.bn=invariant|ignore|fold)",
           "protocol.kinds": "protocol.measures (e.g. [chain_gram,raw])",
           "protocol.confidence": "nothing: the error bound is one-sided at level 1 - protocol.alpha"}


def check_choices(argv: list[str]) -> None:
    """Unknown config-group choices end in one line that lists the choices, a renamed setting in
    one line that names the new one, a value of the wrong type in one line (before Hydra starts)."""
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key in RENAMED:
            raise WeightsimError(f"{key} is gone: use {RENAMED[key]}")
        if key in GROUPS and value and value != "null":
            for v in value.split(","):
                if v not in choices(key):
                    raise WeightsimError(f"unknown {key} '{v}': choose from {', '.join(choices(key))}")


def quiet() -> None:
    """Keep the terminal for progress bars and results: Lightning's INFO banners go. Lightning sets
    its loggers to INFO when it is imported, so their levels are set then (now, if it already is):
    a command that fails its checks before any work never imports Lightning."""
    if "lightning.pytorch" in sys.modules:
        quiet_lightning_loggers()
    elif not any(isinstance(f, AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, AfterImport("lightning.pytorch", quiet_lightning_loggers))
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")


def quiet_lightning_loggers() -> None:
    for name in list(logging.root.manager.loggerDict) + ["lightning.pytorch", "lightning.fabric"]:
        if name.startswith(("lightning", "pytorch_lightning")):
            logging.getLogger(name).setLevel(logging.WARNING)


class AfterImport(importlib.abc.MetaPathFinder):
    """A one-shot import hook: ``then()`` runs right after module ``name`` is first executed."""

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = next(filter(None, (f.find_spec(fullname, path, target) for f in sys.meta_path
                                  if hasattr(f, "find_spec"))), None)  # the module as the finders after it find it
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            self.then()

        spec.loader.exec_module = exec_module
        return spec


def log_to_file(level: int, message: str) -> None:
    """Write ``message`` to Hydra's job log file only (the terminal already has its one line)."""
    entry = logging.LogRecord("weightsim", level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(entry)


@contextlib.contextmanager
def collect_warnings():
    """Within a job: every WeightsimWarning is printed at once as one ``warning: ...`` line on stderr,
    written to the job's log file, and kept in the yielded list so the report can record it. Other
    warnings pass as usual."""
    seen: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always", WeightsimWarning)
        show = warnings.showwarning

        def record(message, category, *args, **kwargs):
            if not issubclass(category, WeightsimWarning):
                return show(message, category, *args, **kwargs)
            if str(message) not in seen:
                seen.append(str(message))
                print(f"warning: {message}", file=sys.stderr)
                log_to_file(logging.WARNING, str(message))

        warnings.showwarning = record
        yield seen


# -- after the jobs of a multirun (weightsim/sweep.py) -------------------------------------------
def htt_job(cfg: DictConfig, run_dir: Path) -> str | None:
    """One HTT run of a sweep, in ``run_dir``: None, or the one-line error it ended with (the traceback
    goes to ``run_dir/error.txt``; one failing HTT must not stop the others)."""
    logger = None
    try:
        logger = make_logger(cfg, "htt")  # a wandb run named from the zoos it reads
        with collect_warnings() as notes:
            htt_stage(cfg, logger, notes, run_dir=run_dir)
        return None
    except Exception as e:  # noqa: BLE001
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        return user_error(e) or f"{type(e).__name__}: {e}"
    finally:
        finish(logger)


class AfterSweep(Callback):
    """Hydra callback (conf/config.yaml, hydra.callbacks): marks each multirun job ``started`` as it
    starts; after the jobs, runs ``weightsim.sweep.after_sweep`` (HTT once per complete zoo, collect,
    the summary) and exits 1 when a job or an HTT run failed."""

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if in_multirun():
            record_job(config, "?", "started")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)  # Hydra clears it after the jobs; ${hydra:...} needs it
        from weightsim.report.collect import collect  # (matplotlib: imported only where a sweep ends)

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            with stop_on_signals():  # the sweep's HTT runs here, after the jobs: a stop is a failure too
                failed = sweep_dir.is_dir() and after_sweep(sweep_dir, config.get("sweep") or {}, config.get("name"),
                                                            htt_job, collect)
        except Stopped as e:
            print(f"error: sweep {sweep_dir}: {stopped_line(e)}", file=sys.stderr)
            sys.exit(128 + e.signum)
        if failed:
            sys.exit(1)


# -- entry points ----------------------------------------------------------------------------------
def user_error(e: BaseException) -> str | None:
    """The one line a user sees for ``e``, or None when it is a bug (then the traceback is shown).

    A WeightsimError counts wherever it sits in the cause chain (Hydra's ``instantiate`` wraps it).
    A required config value left at ``???`` (OmegaConf's MissingMandatoryValue) names the key to set.
    """
    found = in_cause_chain(e, (WeightsimError, MissingMandatoryValue))
    if isinstance(found, MissingMandatoryValue):
        key = found.full_key or "a required value"
        return f"{key} is required and has no value: add {key}=... to the command"
    return None if found is None else str(found)


class Stopped(BaseException):
    """SIGTERM (SLURM preemption, a job time limit, ``timeout``) or SIGINT reached a job. A
    BaseException, so no ``except Exception`` swallows it, and not Lightning's SIGTERMException (a
    SystemExit without a code: exit 0), so a stopped job can never pass for a finished one."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals():
    """Within a job, SIGTERM and SIGINT raise ``Stopped`` where the job is (Lightning calls this
    handler after its own, then tears the fit down); the previous handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def stop(signum, frame):
        signal.signal(signum, signal.SIG_DFL)  # a second signal of this kind ends the process at once
        raise Stopped(signum)

    before = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def stopped_line(e: Stopped) -> str:
    return f"stopped by {e} before it finished: rerun the same command to resume (a zoo keeps the nets it finished)"


def _app(stage, app: str, config_name: str = "config"):
    def task(cfg: DictConfig) -> None:
        if gpu := pin_joblib_gpu():  # launcher=joblib on several GPUs: one GPU per worker (weightsim/sweep.py)
            print(f"job {job_name()}: CUDA_VISIBLE_DEVICES={gpu}", flush=True)
        logger = None
        try:
            check_config(cfg, app)  # every setting, before Lightning is imported, the logger starts or a net trains
            quiet()
            logger = make_logger(cfg, app)
            with stop_on_signals(), collect_warnings() as notes:
                stage(cfg, logger, notes)
        except Stopped as e:  # a failure with its own exit status (128 + the signal), also in a sweep
            log_to_file(logging.ERROR, stopped_line(e))
            if in_multirun():
                record_job(cfg, app, "failed", stopped_line(e))
            print(f"error: {'job ' + job_name() + ': ' if in_multirun() else ''}{stopped_line(e)}", file=sys.stderr)
            sys.exit(128 + e.signum)
        except Exception as e:
            line = user_error(e)
            if in_multirun():  # one failing job must not stop the sweep: record it, name it, go on
                logging.getLogger("weightsim").error("job failed\n%s", traceback.format_exc())
                line = line or f"{type(e).__name__}: {e} (traceback in the job's log)"
                record_job(cfg, app, "failed", line)
                print(f"error: job {job_name()}: {line}", file=sys.stderr)
                return
            if line is None or os.environ.get("HYDRA_FULL_ERROR") == "1":  # a bug, or asked for the traceback
                raise
            print(f"error: {line}", file=sys.stderr)
            sys.exit(2)
        finally:
            finish(logger)
        if in_multirun():
            record_job(cfg, app, "ok")

    def main() -> None:
        os.environ.setdefault("WANDB_SILENT", "true")
        register_configs()
        if {"--help", "-h"} & set(sys.argv[1:]) and app in APPS:  # this app's page, not Hydra's generic one
            sys.argv.append(register_help(app))
        try:
            check_choices(sys.argv[1:])
            check_launcher(sys.argv[1:])
            if os.environ.get("HYDRA_FULL_ERROR") != "1":  # else Hydra's own report, with its traceback
                check_composition(sys.argv[1:], config_name)
        except WeightsimError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        hydra.main(config_path=str(CONF), config_name=config_name, version_base="1.3")(task)()

    return main


def _zoo(cfg, logger, notes):
    path = zoo_stage(cfg, logger)
    print(f"zoo: {path}")


def _run(cfg, logger, notes):
    zoo_stage(cfg, logger)
    if in_multirun() and cfg.sweep.htt:  # a seed block of a zoo: HTT runs once the zoo is complete (sweep.py)
        return
    htt_stage(cfg, logger, notes)


def _import(cfg, logger, notes):
    print(f"zoo: {import_stage(cfg)}")


_zoo_main = _app(_zoo, "zoo")
_import_main = _app(_import, "import", "import")  # conf/import.yaml


def zoo_main() -> None:
    """weightsim-zoo [overrides]: train the missing nets of a zoo; weightsim-zoo verify zoo_dir=DIR:
    check every file of a zoo against its manifest (exit 1 on any problem); weightsim-zoo import
    folder=DIR arch=... zoo_dir=DIR: checkpoints trained elsewhere as a zoo (weightsim/zoo/importer.py)."""
    if len(sys.argv) > 1 and sys.argv[1] == "verify":
        from weightsim.zoo.verify import main as verify_main

        sys.exit(verify_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "import":
        del sys.argv[1]  # Hydra reads the overrides after it
        _import_main()
        return
    _zoo_main()



htt_main = _app(htt_stage, "htt")
run_main = _app(_run, "run")


def collect_main() -> None:
    """weightsim-collect SWEEP_DIR: gather an experiment sweep's HTT runs into SWEEP_DIR/collected/
    (the figure, table.csv and table.md with the paper's numbers beside ours)."""
    from weightsim.stages.collect import collect_stage

    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print("usage: weightsim-collect SWEEP_DIR   (the multirun dir of an experiment sweep)", file=sys.stderr)
        sys.exit(2)
    try:
        collect_stage(sys.argv[1])
    except WeightsimError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _compare(cfg, logger, notes):
    from weightsim.stages.compare import compare_stage

    compare_stage(cfg, logger, notes)


compare_main = _app(_compare, "compare")


def _recover(cfg, logger, notes):
    from weightsim.stages.recover import recover_stage

    recover_stage(cfg, logger, notes)


recover_main = _app(_recover, "recover", "recover")  # weightsim-recover: Expand-and-Cluster (conf/recover.yaml)


def plan_main() -> None:
    """weightsim-plan [weightsim-run's overrides]: nets, steps, FLOPs, memory, disk and time of a run
    or sweep (-m), without its data (weightsim/plan.py)."""
    from weightsim.plan import plan

    argv = sys.argv[1:]
    quiet()
    register_configs()  # the structured configs' choices (zoo=default, ...) for check_choices
    try:
        check_choices(argv)
        print(plan(argv))
    except Exception as e:
        line = user_error(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
