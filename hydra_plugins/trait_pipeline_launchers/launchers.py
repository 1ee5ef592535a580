"""The two launchers: ``hydra/launcher=local`` (this machine) and ``hydra/launcher=slurm``.

Both write the sweep's bookkeeping into the variant-neutral sweep folder
(``trait_pipeline.sweeps``), run every job through :class:`~.job.SweepJob` (each job writes
under its own ``${model_variant.name}``), wait for all of them, and then, if any failed,
print one line per failed job (its overrides, its error, its log file) and exit 1.

``slurm`` submits the whole sweep as one job array through submitit
(``executor.map_array``) and polls the scheduler (squeue, sacct or scontrol) and the jobs'
own status files; ``wait: false`` submits and returns at once, leaving
``python -m trait_pipeline.sweep_status <sweep dir>`` to follow the jobs.

    python -m trait_pipeline.steer -m hydra/launcher=slurm model_variant=instruct,rm_lora layer=10,20
    python -m trait_pipeline.steer -m hydra/launcher=local hydra.launcher.n_jobs=2 layer=10,20
"""


import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from .job import JobFailed, SweepJob

log = logging.getLogger(__name__)

from trait_pipeline.sweeps import LAUNCH_FILE


@dataclass
class LocalParams:
    """``conf/hydra/launcher/local.yaml``."""

    n_jobs: int = 1             # >1: run that many jobs at once, each in its own process


@dataclass
class SlurmParams:
    """``conf/hydra/launcher/slurm.yaml``: what each job of the array asks SLURM for."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    timeout_min: int = 60
    cpus_per_task: int = 4
    gpus_per_node: int | None = None
    mem_gb: float | None = None
    nodes: int = 1
    constraint: str | None = None
    exclude: str | None = None
    gres: str | None = None
    array_parallelism: int = 64         # at most this many jobs of the array run at once
    setup: list[str] = field(default_factory=list)   # shell lines run before the job
    srun_args: list[str] = field(default_factory=list)
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # any other sbatch flag
    signal_delay_s: int = 120           # SIGUSR2 this long before the time limit: requeue
    max_num_timeout: int = 3            # requeues after hitting the time limit
    job_name: str | None = None         # default: the stage name
    python: str | None = None           # default: this interpreter
    wait: bool = True                   # false: submit, print the sweep folder, return
    poll_s: float = 2.0


def _params(cls: type, kwargs: dict[str, Any], profile: str) -> Any:
    known = {f.name for f in fields(cls)}
    bad = sorted(set(kwargs) - known)
    if bad:
        print(f"error: unknown setting hydra.launcher.{bad[0]} for the {profile} launcher; "
              f"expected one of: {', '.join(sorted(known))}", file=sys.stderr)
        raise SystemExit(2)
    plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
             for k, v in kwargs.items()}
    return cls(**plain)


class _SweepLauncher(Launcher):
    kind = "?"

    def __init__(self, params: Any) -> None:
        self.params = params
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    # the sweep ----------------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton

        from trait_pipeline import resolvers
        from trait_pipeline.sweeps import (
            JobRecord,
            Manifest,
            manifest_path,
            read_manifest,
            write_manifest,
        )

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        resolvers.register()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        nums = [initial_job_idx + i for i in range(len(job_overrides))]
        overrides = [list(o) for o in job_overrides]

        if manifest_path(sweep_dir).is_file():  # a sweeper that launches in batches
            manifest = read_manifest(sweep_dir)
        else:
            manifest = Manifest(stage=str(self.config.get("stage", self.config.hydra.job.name)),
                                launcher=self.kind, jobs=[], command=list(sys.argv))
        manifest.jobs += [JobRecord(n, o) for n, o in zip(nums, overrides)]
        write_manifest(sweep_dir, manifest)

        job = SweepJob(self.hydra_context, self.task_function, self.config, str(sweep_dir),
                       Singleton.get_state())
        self._save_launch(sweep_dir, job)
        log.info("sweep of %d jobs (%s launcher); sweep folder %s", len(nums), self.kind, sweep_dir)
        for n, o in zip(nums, overrides):
            log.info("\t#%d : %s", n, " ".join(filter_overrides(o)))
        returns = self._run(job, sweep_dir, nums, overrides)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns

    def _save_launch(self, sweep_dir: Path, job: SweepJob) -> None:
        """What ``sweep_status --resubmit`` needs to send a job again (cloudpickle, like submitit)."""
        import cloudpickle

        from trait_pipeline.jsonio import atomic_write_bytes

        payload = {"launcher": self.kind, "params": asdict(self.params), "job": job}
        atomic_write_bytes(sweep_dir / LAUNCH_FILE, cloudpickle.dumps(payload))

    def _run(self, job: SweepJob, sweep_dir: Path, nums: list[int],
             overrides: list[list[str]]) -> list[JobReturn]:
        raise NotImplementedError


def report_failures(sweep_dir: Path, nums: list[int]) -> None:
    """Print one line per failed job of ``nums`` and exit 1; return if none failed."""
    from trait_pipeline.sweeps import job_states, summary

    states = [s for s in job_states(sweep_dir) if s.num in set(nums)]
    bad = [s for s in states if s.state != "done"]
    if not bad:
        log.info("sweep done: %s; folder %s", summary(states), sweep_dir)
        return
    lines = [f"error: {len(bad)} of {len(states)} jobs of the sweep did not finish ({summary(states)}):"]
    for s in bad:
        where = f" (log: {s.log})" if s.log else ""
        lines.append(f"  #{s.num} {s.name}: {s.state}: {s.error or s.scheduler_state or '?'}{where}")
    lines.append(f"  sweep folder: {sweep_dir}")
    lines.append(f"  status: python -m trait_pipeline.sweep_status {sweep_dir}")
    print("\n".join(lines), file=sys.stderr, flush=True)
    raise SystemExit(1)


def _ok(ret: Any) -> JobReturn:
    if isinstance(ret, JobReturn):
        return ret
    out = JobReturn()
    out.status, out._return_value = JobStatus.COMPLETED, ret
    return out


def _run_payload(payload: bytes, num: int, overrides: list[str]) -> Any:
    """A worker process's entry: unpickle the job and run it."""
    import pickle

    import cloudpickle

    ret = cloudpickle.loads(payload)(num, overrides)
    value = ret._return_value if isinstance(ret, JobReturn) else ret
    try:  # Hydra's config classes do not cross process boundaries; plain values do
        pickle.dumps(value)
    except Exception:  # noqa: BLE001  any unpicklable value
        value = None
    return value


class LocalLauncher(_SweepLauncher):
    """Runs the sweep on this machine: one job at a time in this process, or ``n_jobs`` workers."""

    kind = "local"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(_params(LocalParams, kwargs, "local"))

    def _run(self, job, sweep_dir, nums, overrides):
        return run_local(job, sweep_dir, nums, overrides, self.params.n_jobs)


def run_local(job: SweepJob, sweep_dir: Path, nums: list[int], overrides: list[list[str]],
              n_jobs: int = 1) -> list[JobReturn]:
    """Run jobs here (in-process, or ``n_jobs`` spawned workers); exit 1 naming failed jobs."""
    results: dict[int, JobReturn] = {}
    if n_jobs <= 1:
        for n, o in zip(nums, overrides):
            try:
                results[n] = _ok(job(n, o))
            except JobFailed as exc:
                log.error("job #%d failed: %s", n, exc)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        import cloudpickle
        from tqdm import tqdm

        payload = cloudpickle.dumps(job)
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_run_payload, payload, n, o): n for n, o in zip(nums, overrides)}
            for fut in tqdm(as_completed(futs), total=len(futs), desc="sweep", unit="job", disable=None):
                n = futs[fut]
                try:
                    results[n] = _ok(fut.result())
                except Exception as exc:  # noqa: BLE001  JobFailed, or a worker that died
                    log.error("job #%d failed: %s", n, exc)
                    _mark_if_silent(sweep_dir, n, exc)
    report_failures(sweep_dir, nums)
    return [results.get(n) or _ok(None) for n in nums]


def _mark_if_silent(sweep_dir: Path, num: int, exc: BaseException) -> None:
    """A worker killed outright never wrote its failure; write it for it."""
    from trait_pipeline.errors import one_line
    from trait_pipeline.jsonio import read_json
    from trait_pipeline.sweeps import job_file, mark_job

    path = job_file(sweep_dir, num)
    if not path.is_file() or read_json(path).get("state") not in ("failed", "done"):
        mark_job(sweep_dir, num, "failed", error=one_line(exc))


class SlurmLauncher(_SweepLauncher):
    """Submits the sweep to SLURM as one job array (submitit), then waits unless ``wait: false``."""

    kind = "slurm"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(_params(SlurmParams, kwargs, "slurm"))

    def _run(self, job, sweep_dir, nums, overrides):
        stage = str(self.config.get("stage", "sweep")) if self.config is not None else "sweep"
        jobs = submit_slurm(self.params, job, sweep_dir, nums, overrides, stage)
        if not self.params.wait:
            print(f"submitted {len(jobs)} jobs as SLURM array {jobs[0].job_id.split('_')[0]}; "
                  f"follow them with: python -m trait_pipeline.sweep_status {sweep_dir}",
                  flush=True)
            return [_ok(None) for _ in nums]
        return wait_slurm(sweep_dir, nums, jobs, self.params.poll_s)


def slurm_executor(params: SlurmParams, sweep_dir: Path, stage: str) -> Any:
    import submitit

    ex = submitit.SlurmExecutor(folder=sweep_dir / ".submitit" / "%j",
                                max_num_timeout=params.max_num_timeout, python=params.python)
    opts = {
        "job_name": params.job_name or stage, "partition": params.partition,
        "account": params.account, "qos": params.qos, "time": int(params.timeout_min),
        "cpus_per_task": params.cpus_per_task, "gpus_per_node": params.gpus_per_node,
        "mem": None if params.mem_gb is None else f"{int(params.mem_gb * 1024)}M",
        "nodes": params.nodes, "ntasks_per_node": 1, "constraint": params.constraint,
        "exclude": params.exclude, "gres": params.gres,
        "array_parallelism": params.array_parallelism, "setup": list(params.setup),
        "srun_args": list(params.srun_args) or None,
        "additional_parameters": dict(params.additional_parameters) or None,
        "signal_delay_s": params.signal_delay_s,
    }
    ex.update_parameters(**{k: v for k, v in opts.items() if v is not None})
    return ex


def submit_slurm(params: SlurmParams, job: SweepJob, sweep_dir: Path, nums: list[int],
                 overrides: list[list[str]], stage: str) -> list[Any]:
    """Submit ``job`` for each (num, overrides) as one array; record the ids in ``sweep.json``."""
    from trait_pipeline.sweeps import read_manifest, write_manifest

    tic = time.perf_counter()
    ex = slurm_executor(params, sweep_dir, stage)
    jobs = ex.map_array(job, nums, overrides)
    manifest = read_manifest(sweep_dir)
    ids = {n: j.job_id for n, j in zip(nums, jobs)}
    for rec in manifest.jobs:
        if rec.num in ids:
            rec.scheduler_ids.append(ids[rec.num])
            rec.submitit_folder = str(sweep_dir / ".submitit" / ids[rec.num])
    write_manifest(sweep_dir, manifest)
    log.info("submitted %d jobs as SLURM array %s in %.1fs", len(jobs), jobs[0].job_id.split("_")[0],
             time.perf_counter() - tic)
    return jobs


def wait_slurm(sweep_dir: Path, nums: list[int], jobs: list[Any], poll_s: float = 2.0) -> list[JobReturn]:
    """Poll until every job is done, failed, cancelled or lost; exit 1 naming the failures."""
    from tqdm import tqdm

    from trait_pipeline.sweeps import TERMINAL, job_states

    wanted = set(nums)
    with tqdm(total=len(nums), desc="sweep", unit="job", disable=None) as bar:
        while True:
            states = [s for s in job_states(sweep_dir) if s.num in wanted]
            finished = sum(s.state in TERMINAL for s in states)
            bar.update(finished - bar.n)
            if finished == len(states):
                break
            time.sleep(poll_s)
    report_failures(sweep_dir, nums)
    out = []
    for job in jobs:
        try:
            out.append(_ok(job.result()))
        except Exception as exc:  # noqa: BLE001  the result pickle went missing: the job said done
            log.warning("job %s: no result (%s)", job.job_id, exc)
            out.append(_ok(None))
    return out
