"""One job of a sweep, as it runs wherever the launcher sent it (this process, a worker, SLURM).

:class:`SweepJob` is the picklable callable both launchers hand out: ``job(num, overrides)``
composes the job's config, runs the stage through Hydra's ``run_job`` (so the job gets its own
output dir, ``.hydra/`` snapshot and log file under its ``${model_variant.name}``), and keeps
``jobs/{num}.json`` in the sweep folder up to date.

What it adds to Hydra's own job runner:

* a failure's traceback is logged to the job's log file (Hydra alone shows it only on the
  terminal), and the job then raises :class:`JobFailed`, so submitit and SLURM see it fail;
* SLURM preemption or a timeout requeues the job (submitit calls :meth:`SweepJob.checkpoint`);
  the rerun starts over and the stages skip the work that is already on disk.

>>> JobFailed("model_variant=rm_lora layer=20: error: unknown method 'x'").args[0][:24]
'model_variant=rm_lora la'
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)




class JobFailed(RuntimeError):
    """A job of a sweep failed; the message names it and its log file."""


class _LoggedTask:
    """Wraps the stage's task so what goes wrong reaches the job's log file."""

    def __init__(self, task: Any, sweep_dir: str, num: int) -> None:
        self.task, self.sweep_dir, self.num = task, sweep_dir, num
        self.__name__ = getattr(task, "__name__", "task")

    def __call__(self, cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig

        from trait_pipeline.sweeps import mark_job

        hc = HydraConfig.get()
        out_dir = Path(hc.runtime.output_dir)
        mark_job(self.sweep_dir, self.num, "running", output_dir=str(out_dir),
                 log=str(out_dir / f"{hc.job.name}.log"))
        try:
            return self.task(cfg)
        except SystemExit as exc:  # the stage's one-line PipelineError exit (already logged)
            if exc.code in (0, None):
                return None
            raise JobFailed(getattr(exc, "error", None) or f"exit status {exc.code}") from None
        except Exception:
            log.exception("job %d failed", self.num)
            raise


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
        # the config reads these (paths.experiments ...): a rerun must see the sweep's values.
        # This object is pickled into the sweep folder: credentials (HF_TOKEN ...) stay out of
        # it and reach the job from its own environment (inherited, or exported by sbatch).
        from trait_pipeline.safety.secrets import job_env

        self.env = job_env()

    def __call__(self, num: int, overrides: list[str]) -> Any:
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobStatus, filter_overrides, run_job, setup_globals
        from omegaconf import open_dict

        from trait_pipeline import resolvers
        from trait_pipeline.errors import one_line
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
            mark_job(self.sweep_dir, num, "failed", error=one_line(exc))
            raise JobFailed(f"{name}: {one_line(exc)}") from exc
        if ret.status == JobStatus.FAILED:
            exc = ret._return_value
            mark_job(self.sweep_dir, num, "failed", error=one_line(exc))
            logfile = read_json(job_file(self.sweep_dir, num)).get("log")
            raise JobFailed(f"{name}: {one_line(exc)} (log: {logfile})") from exc
        mark_job(self.sweep_dir, num, "done")
        return ret

    def checkpoint(self, num: int, overrides: list[str]) -> Any:
        """Called by submitit on preemption/timeout: requeue this same job (it resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, num, overrides)
