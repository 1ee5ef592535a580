"""One job of a sweep, as it runs wherever the launcher sent it (this process, a worker, SLURM).

:class:`SweepJob` is the picklable callable both launchers hand out: ``job(num, overrides)``
composes the job's config, runs the stage through Hydra's ``run_job`` (so the job gets its own
output dir, ``.hydra/`` snapshot and log file under its ``${model_variant.name}``), and keeps
``jobs/{num}.json`` in the sweep folder up to date.

What it adds to Hydra's own job runner:

* a failure's traceback is logged to the job's log file (Hydra alone shows it only on the
  terminal), and the job then raises :class:`JobFailed`, so submitit and SLURM see it fail;
* SLURM preemption or a timeout requeues the job (submitit calls :meth:`SweepJob.checkpoint`);
  the rerun starts over and the stages skip the work that is already on disk;
* an attempt SLURM stops (SIGTERM on scancel/requeue, SIGUSR2 before the time limit) marks
  its run folder killed, with the signal (:mod:`trait_pipeline.launch.attempts`), and so does
  the next attempt for one that was killed outright (SIGKILL);
* failure lines keep the exception's type (``ValueError: layer 99 ...``);
* a job SLURM gave GPUs sees exactly those (``CUDA_VISIBLE_DEVICES``, see :func:`slurm_gpus`).

>>> JobFailed("model_variant=rm_lora layer=20: error: unknown method 'x'").args[0][:24]
'model_variant=rm_lora la'
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


ENV_PREFIXES = ("TRAIT_PIPELINE_", "HF_", "TRANSFORMERS_")


class JobFailed(RuntimeError):
    """A job of a sweep failed; the message names it and its log file."""


def describe(exc: BaseException) -> str:
    """One line for a failure, with the exception's type unless it is the user-error kind.

    >>> describe(ValueError("layer 99 is out of range"))
    'ValueError: layer 99 is out of range'
    """
    from trait_pipeline.errors import PipelineError, one_line

    if isinstance(exc, (JobFailed, PipelineError)):
        return one_line(exc)
    text = one_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def slurm_gpus() -> str | None:
    """Under SLURM: make ``CUDA_VISIBLE_DEVICES`` the GPUs SLURM gave this job; returns them.

    SLURM's gres/gpu plugin sets it itself; where a site's setup leaves it unset but SLURM
    reports the allocation (``SLURM_JOB_GPUS`` / ``SLURM_STEP_GPUS``), it is set from there.
    A job that got no GPU keeps what it has (on clusters that do not manage GPUs as GRES,
    every GPU of the node is visible and nothing restricts it).
    """
    given = os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS")
    if given and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        os.environ["CUDA_VISIBLE_DEVICES"] = given
    return os.environ.get("CUDA_VISIBLE_DEVICES")


class _LoggedTask:
    """Wraps the stage's task so what goes wrong reaches the job's log file."""

    def __init__(self, task: Any, sweep_dir: str, num: int) -> None:
        self.task, self.sweep_dir, self.num = task, sweep_dir, num
        self.__name__ = getattr(task, "__name__", "task")
        self.killed_by: str | None = None

    def __call__(self, cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig

        from trait_pipeline.sweeps import current_scheduler_id, mark_job

        hc = HydraConfig.get()
        out_dir = Path(hc.runtime.output_dir)
        under_slurm = current_scheduler_id() is not None
        if under_slurm:
            _mark_previous_attempt(self.sweep_dir, self.num, out_dir)
        info: dict[str, Any] = {"output_dir": str(out_dir), "log": str(out_dir / f"{hc.job.name}.log")}
        if under_slurm:
            info["cuda_visible_devices"] = slurm_gpus()
            log.info("SLURM job %s on %s: CPUs %s, GPUs (CUDA_VISIBLE_DEVICES) %s", current_scheduler_id(),
                     os.uname().nodename, os.environ.get("SLURM_CPUS_PER_TASK", "default"),
                     info["cuda_visible_devices"] or "none")
        mark_job(self.sweep_dir, self.num, "running", **info)
        restore = self._watch_signals(out_dir) if under_slurm else []
        try:
            return self.task(cfg)
        except SystemExit as exc:  # the stage's one-line PipelineError exit (already logged)
            if self.killed_by:  # submitit requeued this attempt and is exiting: not a failure
                self._mark_killed(out_dir, force=True)
                raise
            if exc.code in (0, None):
                return None
            raise JobFailed(getattr(exc, "error", None) or f"exit status {exc.code}") from None
        except Exception:
            log.exception("job %d failed", self.num)
            raise
        finally:
            for sig, old in restore:
                signal.signal(sig, old)

    def _mark_killed(self, out_dir: Path, force: bool = False) -> None:
        from trait_pipeline.jsonio import read_json
        from trait_pipeline.launch.attempts import mark_killed
        from trait_pipeline.sweeps import job_file

        try:
            attempt = int(read_json(job_file(self.sweep_dir, self.num)).get("attempts", 0)) or None
        except Exception:  # noqa: BLE001  a signal handler must not raise
            attempt = None
        mark_killed(out_dir, signal=self.killed_by, attempt=attempt, sweep_id=Path(self.sweep_dir).name,
                    force=force)

    def _watch_signals(self, out_dir: Path) -> list[tuple[int, Any]]:
        """Mark this attempt killed when SLURM signals it, then let submitit's handler act."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return []
        usr = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
        restore = []
        for sig in (signal.SIGTERM, usr):
            old = signal.getsignal(sig)

            def handler(signum, frame, old=old):
                from trait_pipeline.sweeps import mark_job

                self.killed_by = signal.Signals(signum).name
                log.warning("attempt stopped by %s: marking its run folder killed", self.killed_by)
                try:
                    self._mark_killed(out_dir)
                    mark_job(self.sweep_dir, self.num, "killed", signal=self.killed_by)
                except Exception:
                    log.exception("could not mark the attempt killed")
                if callable(old):
                    old(signum, frame)
                elif old == signal.SIG_DFL:
                    signal.signal(signum, signal.SIG_DFL)
                    os.kill(os.getpid(), signum)

            signal.signal(sig, handler)
            restore.append((sig, old))
        return restore


def _mark_previous_attempt(sweep_dir: str, num: int, out_dir: Path) -> None:
    """A new attempt starts: if the last one never said how it ended, it was killed."""
    from trait_pipeline.jsonio import read_json
    from trait_pipeline.launch.attempts import mark_killed
    from trait_pipeline.sweeps import job_file

    path = job_file(sweep_dir, num)
    try:
        old = read_json(path) if path.is_file() else {}
    except Exception:  # noqa: BLE001  an unreadable record: nothing to mark
        return
    prev = old.get("output_dir")
    if old.get("state") in ("running", "killed") and prev and Path(prev) != out_dir:
        mark_killed(Path(prev), signal=old.get("signal"), attempt=int(old.get("attempts", 0)) or None,
                    sweep_id=Path(sweep_dir).name)


class SweepJob:
    """``job(num, overrides)`` runs one job of a sweep; see the module docstring."""

    def __init__(self, hydra_context: Any, task_function: Any, config: Any, sweep_dir: str,
                 singleton_state: Any) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.sweep_dir = str(sweep_dir)
        self.singleton_state = singleton_state
        self.owner_pid = os.getpid()  # the launcher's process: no state to restore there
        # the config reads these (paths.experiments ...): a rerun must see the sweep's values
        self.env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}

    def __call__(self, num: int, overrides: list[str]) -> Any:
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobStatus, filter_overrides, run_job, setup_globals
        from omegaconf import open_dict

        from trait_pipeline import resolvers
        from trait_pipeline.jsonio import read_json
        from trait_pipeline.sweeps import current_scheduler_id, job_file, mark_job

        if os.getpid() != self.owner_pid:
            Singleton.set_state(self.singleton_state)
            os.environ.update(self.env)
        setup_globals()
        resolvers.register()
        name = " ".join(filter_overrides(overrides)) or f"job {num}"
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = current_scheduler_id() or f"{num}"
                cfg.hydra.job.num = num
                cfg.hydra.sweep.dir = self.sweep_dir  # resolved once, by the launcher
            ret = run_job(hydra_context=self.hydra_context,
                          task_function=_LoggedTask(self.task_function, self.sweep_dir, num),
                          config=cfg, job_dir_key="hydra.sweep.dir",
                          job_subdir_key="hydra.sweep.subdir")
        except Exception as exc:  # composition failed: there is no job log yet
            mark_job(self.sweep_dir, num, "failed", error=describe(exc))
            raise JobFailed(f"{name}: {describe(exc)}") from exc
        if ret.status == JobStatus.FAILED:
            exc = ret._return_value
            mark_job(self.sweep_dir, num, "failed", error=describe(exc))
            logfile = read_json(job_file(self.sweep_dir, num)).get("log")
            raise JobFailed(f"{name}: {describe(exc)} (log: {logfile})") from exc
        mark_job(self.sweep_dir, num, "done")
        return ret

    def checkpoint(self, num: int, overrides: list[str]) -> Any:
        """Called by submitit on preemption/timeout: requeue this same job (it resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, num, overrides)
