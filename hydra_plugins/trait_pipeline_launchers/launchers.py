"""The two launchers: ``hydra/launcher=local`` (this machine) and ``hydra/launcher=slurm``.

Both write the sweep's bookkeeping into the variant-neutral sweep folder
(``trait_pipeline.sweeps``), run every job through :class:`~.job.SweepJob` (each job writes
under its own ``${model_variant.name}``), wait for all of them, and then, if any failed,
print one line per failed job (its overrides, its error, its log file) and exit 1.

``slurm`` checks the request against the partition (``precheck``), submits the whole sweep
as one job array through submitit (``executor.map_array``) and polls the scheduler and the
jobs' own status files. It stops early, exit 2, when SLURM says a job can never start
(:mod:`trait_pipeline.launch.slurm_reasons`), prints a status line with SLURM's reason while
jobs wait, and on Ctrl-C says how to follow or cancel the jobs (exit 130). An sbatch refusal
is one line with sbatch's message (exit 2), and the sweep folder is removed. ``wait: false``
submits and returns at once, leaving ``trait-pipeline status <sweep dir>`` to follow the jobs.

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

from trait_pipeline.errors import PipelineError

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
    cpus_per_task: int | None = None    # None: the cluster's default (1 on most)
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
    report_s: float = 60.0              # while waiting: a status line at least this often
    precheck: bool = True               # check the request against the partition before sbatch
    cancel_on_interrupt: bool = False   # Ctrl-C: cancel the queued/running jobs (else leave them)


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
        self._undo: tuple[Path, Any] | None = None
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
            self._undo = (sweep_dir, read_manifest(sweep_dir))
        else:
            manifest = Manifest(stage=str(self.config.get("stage", self.config.hydra.job.name)),
                                launcher=self.kind, jobs=[], command=list(sys.argv))
            self._undo = (sweep_dir, None)
        manifest.jobs += [JobRecord(n, o) for n, o in zip(nums, overrides)]
        manifest.launcher_params = asdict(self.params)
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
    lines.append(f"  status: {STATUS_CMD} {sweep_dir}")
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

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # before the sweeper makes the sweep folder: a request that can never run writes nothing
        _exit_on_error(lambda: check_slurm_request(self.params))

    def _run(self, job, sweep_dir, nums, overrides):
        stage = str(self.config.get("stage", "sweep")) if self.config is not None else "sweep"
        try:
            jobs = submit_slurm(self.params, job, sweep_dir, nums, overrides, stage)
        except SubmitRefused as exc:
            self._undo_launch()
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            self._undo_launch()
            print("interrupted before SLURM took the sweep: nothing was submitted", file=sys.stderr)
            raise SystemExit(130) from None
        if not self.params.wait:
            print(f"submitted {len(jobs)} jobs as SLURM array {jobs[0].job_id.split('_')[0]}; "
                  f"follow them with: {STATUS_CMD} {sweep_dir}", flush=True)
            return [_ok(None) for _ in nums]
        return wait_slurm(sweep_dir, nums, jobs, self.params)

    def _undo_launch(self) -> None:
        """sbatch took nothing: leave no trace of this launch in the sweep folder."""
        import shutil

        from trait_pipeline.sweeps import write_manifest

        if self._undo is None:
            return
        sweep_dir, previous = self._undo
        if previous is not None:  # an earlier batch of this sweep was submitted: keep it
            write_manifest(sweep_dir, previous)
            return
        # only what Hydra and this launch wrote: hydra.sweep.dir may point at a folder of the user's
        for name in ("multirun.yaml", "sweep.json", LAUNCH_FILE, "jobs", ".submitit"):
            path = sweep_dir / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for folder in [sweep_dir, *list(sweep_dir.parents)[:3]]:  # and sweeps/{stage}/ ... if now empty
            try:
                folder.rmdir()
            except OSError:
                break


STATUS_CMD = "trait-pipeline status"


class SubmitRefused(PipelineError):
    """sbatch refused the array; the message is sbatch's own, plus the setting to look at."""


def _exit_on_error(fn: Any) -> Any:
    """Run ``fn``; a user-facing error becomes one ``error:`` line and exit 2."""
    from trait_pipeline.errors import one_line

    try:
        return fn()
    except PipelineError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def check_slurm_request(params: SlurmParams) -> None:
    """Raise PipelineError (one line, naming the setting) if the partition can never run a job."""
    from trait_pipeline.launch.slurm_cluster import check_request

    if params.precheck:
        check_request(params)


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


# sbatch's message -> the setting to look at
_SBATCH_HINTS = (
    ("Unable to contact slurm controller", ("is slurmctld running and reachable? (the project's one-node "
                                           "cluster: bash launchers/slurm/up.sh, as root)")),
    ("policy", "over a limit of your account/QOS: submit fewer jobs, or change hydra.launcher.qos/account"),
    ("Invalid account", "check hydra.launcher.account (sacctmgr show assoc user=$USER)"),
    ("partition", "check hydra.launcher.partition (sinfo lists the partitions)"),
    ("Invalid qos", "check hydra.launcher.qos"),
    ("generic resource", ("check hydra.launcher.gpus_per_node / hydra.launcher.gres: the partition "
                         "may have no such GPUs")),
    ("gres", "check hydra.launcher.gpus_per_node / hydra.launcher.gres"),
    ("feature", "check hydra.launcher.constraint"),
    ("Memory", "check hydra.launcher.mem_gb: no node has that much"),
    ("node configuration", ("no node offers that much: hydra.launcher.cpus_per_task, mem_gb, "
                           "gpus_per_node or nodes")),
    ("time limit", "check hydra.launcher.timeout_min"),
    ("array", "the sweep has more jobs than the cluster's MaxArraySize: split it"),
    ("limit", "over a limit of your account/QOS: submit fewer jobs, or change hydra.launcher.qos/account"),
    ("option", "check hydra.launcher.additional_parameters / srun_args"),
)


def _sbatch_refusal(message: str) -> SubmitRefused:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    text = "; ".join(lines) or "sbatch failed without a message"
    hint = next((h for key, h in _SBATCH_HINTS if key.lower() in text.lower()), "see sbatch's message")
    return SubmitRefused(f"sbatch refused the sweep: {text}; {hint}; nothing was submitted")


def submit_slurm(params: SlurmParams, job: SweepJob, sweep_dir: Path, nums: list[int],
                 overrides: list[list[str]], stage: str, record: dict | None = None) -> list[Any]:
    """Submit ``job`` for each (num, overrides) as one array; record the ids in ``sweep.json``.

    ``record``: a resubmission's entry for the manifest (its scheduler ids are added). An
    sbatch refusal raises :class:`SubmitRefused` and leaves the sweep folder as it was.
    """
    import contextlib
    import io
    import shutil

    from submitit.core.utils import FailedJobError, FailedSubmissionError

    from trait_pipeline.sweeps import read_manifest, write_manifest

    tic = time.perf_counter()
    ex = slurm_executor(params, sweep_dir, stage)
    submitit_dir = sweep_dir / ".submitit"
    before = set(submitit_dir.iterdir()) if submitit_dir.is_dir() else set()
    said = io.StringIO()  # submitit echoes sbatch's stderr; the one line below says it instead
    try:
        with contextlib.redirect_stderr(said):
            jobs = ex.map_array(job, nums, overrides)
    except (FailedJobError, FailedSubmissionError, OSError) as exc:
        for path in (set(submitit_dir.iterdir()) if submitit_dir.is_dir() else set()) - before:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if not before and submitit_dir.is_dir() and not any(submitit_dir.iterdir()):
            submitit_dir.rmdir()
        raise _sbatch_refusal(str(exc) or said.getvalue()) from None
    manifest = read_manifest(sweep_dir)
    ids = {n: j.job_id for n, j in zip(nums, jobs)}
    for rec in manifest.jobs:
        if rec.num in ids:
            rec.scheduler_ids.append(ids[rec.num])
            rec.submitit_folder = str(sweep_dir / ".submitit" / ids[rec.num])
    manifest.launcher_params = asdict(params)
    if record is not None:
        manifest.resubmissions.append({**record, "scheduler_ids": [ids[n] for n in nums]})
    write_manifest(sweep_dir, manifest)
    log.info("submitted %d jobs as SLURM array %s in %.1fs", len(jobs), jobs[0].job_id.split("_")[0],
             time.perf_counter() - tic)
    return jobs


def record_resubmission(sweep_dir: Path, params: Any, record: dict) -> None:
    """A local resubmission: note its settings in the manifest (SLURM ones: :func:`submit_slurm`)."""
    from trait_pipeline.sweeps import read_manifest, write_manifest

    manifest = read_manifest(sweep_dir)
    manifest.launcher_params = asdict(params)
    manifest.resubmissions.append(record)
    write_manifest(sweep_dir, manifest)


def _status_line(states: list[Any]) -> str:
    """``4 jobs: 2 running, 2 pending (Resources)``."""
    from trait_pipeline.sweeps import summary

    text = summary(states)
    reasons = sorted({s.reason for s in states if s.state == "pending" and s.reason})
    if reasons:
        text = text.replace(" pending", f" pending ({', '.join(reasons)})", 1)
    return text


def _never_verdict(states: list[Any], partition: str | None = None) -> Any:
    """The first "never" verdict among the pending jobs' reasons, or None."""
    import getpass
    import subprocess

    from trait_pipeline.launch.slurm_reasons import classify, normalize

    reasons = sorted({normalize(s.reason) for s in states if s.state == "pending" and s.reason})
    for reason in reasons:
        ctx: dict[str, bool] = {}
        if reason in ("AssocMaxJobsLimit", "AssocGrpJobsLimit", "QOSMaxJobsPerUserLimit", "QOSGrpJobsLimit",
                      "AssocMaxSubmitJobLimit", "QOSMaxSubmitJobPerUserLimit"):
            out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-t", "RUNNING", "-o", "%i"],
                                 check=False, capture_output=True, text=True, timeout=30)
            ctx["user_has_running"] = out.returncode != 0 or bool(out.stdout.strip())
        if reason == "ReqNodeNotAvail":
            ctx["all_nodes_unavailable"] = _all_nodes_unavailable(partition)
        verdict = classify(reason, **ctx)
        if verdict.never:
            return verdict
    return None


def _all_nodes_unavailable(partition: str | None = None) -> bool:
    from trait_pipeline.launch.slurm_cluster import partitions, pick_partition

    try:
        part = pick_partition(partition, partitions())
    except PipelineError:
        return False
    return bool(part.nodes) and not any(n.usable for n in part.nodes)


def _give_up(sweep_dir: Path, states: list[Any], verdict: Any, params: SlurmParams) -> None:
    """SLURM will never start the pending jobs: cancel them, say why and what to change, exit 2."""
    import subprocess

    from trait_pipeline.launch.slurm_cluster import (
        SITE_FILE,
        partitions,
        pick_partition,
        request_problems,
    )
    from trait_pipeline.sweeps import mark_job

    pending = [s for s in states if s.state == "pending" and s.scheduler_id]
    ids = [s.scheduler_id for s in pending]
    subprocess.run(["scancel", *ids], check=False, capture_output=True, timeout=60)
    try:  # the setting at fault, where the partition's description shows it
        part = pick_partition(params.partition, partitions())
        found = [(k, why) for k, why in request_problems(params, part) if k in verdict.settings]
    except PipelineError:
        found = []
    detail = "; ".join(why for _, why in found) or verdict.meaning
    settings = [k for k, _ in found] or list(verdict.settings)
    change = ", ".join(f"hydra.launcher.{k}" for k in settings)
    why = f"SLURM will never start it: {verdict.reason} ({detail})"
    for s in pending:
        mark_job(sweep_dir, s.num, "cancelled", error=why)
    running = sum(s.state == "running" for s in states)
    example = " ".join(f"hydra.launcher.{k}=..." for k in settings[:1])
    print(f"error: SLURM will never start {len(pending)} jobs of this sweep: {verdict.reason} ({detail}); "
          f"change {change} (command line or {SITE_FILE}); cancelled them (scancel {' '.join(ids[:4])}"
          f"{' ...' if len(ids) > 4 else ''}); fix and resubmit: {STATUS_CMD} {sweep_dir} --resubmit {example}"
          + (f"; {running} running jobs go on" if running else ""), file=sys.stderr, flush=True)
    raise SystemExit(2)


def _interrupted(sweep_dir: Path, nums: list[int], params: SlurmParams) -> None:
    """Ctrl-C while waiting: say what is still queued and how to follow or cancel it; exit 130."""
    import signal
    import subprocess

    from trait_pipeline.sweeps import ACTIVE, job_states, summary

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
    wanted = set(nums)
    states = [s for s in job_states(sweep_dir) if s.num in wanted]
    active = [s for s in states if s.state in ACTIVE and s.scheduler_id]
    arrays = sorted({s.scheduler_id.split("_")[0] for s in active})
    if not active:
        print(f"interrupted: nothing of the sweep is queued or running ({summary(states)}); "
              f"status: {STATUS_CMD} {sweep_dir}", file=sys.stderr, flush=True)
    elif params.cancel_on_interrupt:
        ids = [s.scheduler_id for s in active]
        subprocess.run(["scancel", *ids], check=False, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # scancel returns before SLURM has let go of them
            left = [s for s in job_states(sweep_dir) if s.num in wanted and s.state in ACTIVE]
            if not left:
                break
            time.sleep(0.5)
        print(f"interrupted: cancelled {len(ids)} queued or running jobs of the sweep "
              f"(hydra.launcher.cancel_on_interrupt=true)\n"
              f"  status:   {STATUS_CMD} {sweep_dir}\n"
              f"  resubmit: {STATUS_CMD} {sweep_dir} --resubmit", file=sys.stderr, flush=True)
    else:
        print(f"interrupted: {len(active)} jobs of the sweep are still queued or running on SLURM "
              f"({_status_line(states)}); they go on without this command\n"
              f"  follow: {STATUS_CMD} {sweep_dir}\n"
              f"  cancel: scancel {' '.join(arrays)}", file=sys.stderr, flush=True)
    raise SystemExit(130)


def wait_slurm(sweep_dir: Path, nums: list[int], jobs: list[Any], params: SlurmParams | None = None) -> list[JobReturn]:
    """Poll until every job is done, failed, cancelled or lost; exit 1 naming the failures.

    Exits 2 (cancelling them) when SLURM says pending jobs can never start, 130 on Ctrl-C.
    """
    from tqdm import tqdm

    from trait_pipeline.sweeps import TERMINAL, job_states

    params = params or SlurmParams()
    wanted = set(nums)
    start = last_print = time.monotonic()
    last_line, suspect = "", None
    try:
        with tqdm(total=len(nums), desc="sweep", unit="job", disable=None) as bar:
            while True:
                states = [s for s in job_states(sweep_dir) if s.num in wanted]
                finished = sum(s.state in TERMINAL for s in states)
                bar.update(finished - bar.n)
                if finished == len(states):
                    break
                verdict = _never_verdict(states, params.partition)
                if verdict is not None and suspect == verdict.reason:  # seen twice: not a blip
                    _give_up(sweep_dir, states, verdict, params)
                suspect = verdict.reason if verdict is not None else None
                line, now = _status_line(states), time.monotonic()
                if (line != last_line and now - last_print >= min(10.0, params.report_s)) \
                        or now - last_print >= params.report_s or not last_line:
                    log.info("waiting for SLURM: %s; %.0f s so far (Ctrl-C leaves them queued; "
                             "status: %s %s)", line, now - start, STATUS_CMD, sweep_dir)
                    last_line, last_print = line, now
                time.sleep(params.poll_s)
    except KeyboardInterrupt:
        _interrupted(sweep_dir, nums, params)
    report_failures(sweep_dir, nums)
    out = []
    for job in jobs:
        try:
            out.append(_ok(job.result()))
        except Exception as exc:  # noqa: BLE001  the result pickle went missing: the job said done
            log.warning("job %s: no result (%s)", job.job_id, exc)
            out.append(_ok(None))
    return out
