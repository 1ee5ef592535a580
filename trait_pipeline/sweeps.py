"""A sweep folder's bookkeeping: which jobs a multirun launched, and what became of each.

The launchers (``hydra_plugins/trait_pipeline_launchers``) write it; ``sweep_status`` reads it.
Everything lives in the variant-neutral sweep folder (``hydra.sweep.dir``)::

    experiments/{exp}/sweeps/{stage}/{timestamp}/
      multirun.yaml       Hydra's config of the whole sweep
      sweep.json          manifest: launcher, its settings, scheduler ids, every job's overrides, resubmissions
      jobs/{num}.json     written by the job itself: running | done | failed | killed, output dir, log
      launch.pkl          the job callable and launcher settings, for ``sweep_status --resubmit``
      .submitit/{id}/     SLURM jobs: submitit's files and the job's stdout/stderr logs

A job's state asks SLURM first (squeue, then sacct, then scontrol): while SLURM has the job
pending it is ``pending``, with SLURM's reason, whatever an older attempt's file says (a
requeued job waits as ``pending``, attempt 2). Once SLURM no longer has it queued or
running, the job's own file decides (``done``, ``failed``), and a job that ended without
saying how is ``cancelled`` or ``lost`` rather than forever ``running``.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> write_manifest(d, Manifest(stage="steer", launcher="local", jobs=[JobRecord(0, ["layer=10"])]))
>>> mark_job(d, 0, "done", output_dir="/x")
>>> [(s.num, s.state) for s in job_states(d, query_scheduler=False)]
[(0, 'done')]
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import PipelineError
from .jsonio import read_json, read_json_for_update, write_json
from .review.run_record import pid_alive

SCHEMA_VERSION = 1
ACTIVE = ("pending", "running")
TERMINAL = ("done", "failed", "cancelled", "lost")
LAUNCH_FILE = "launch.pkl"  # the job callable + launcher settings, for sweep_status --resubmit

# SLURM job states (squeue/sacct/scontrol spell them alike) -> ours
_SLURM_ACTIVE = {
    "PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending",
    "REQUEUE_FED": "pending", "RESV_DEL_HOLD": "pending", "SUSPENDED": "running",
    "RUNNING": "running", "COMPLETING": "running", "RESIZING": "running", "SIGNALING": "running",
    "STAGE_OUT": "running", "STOPPED": "running",
}
_SLURM_DONE = {"COMPLETED": "done", "CANCELLED": "cancelled"}  # everything else terminal: failed


@dataclass
class JobRecord:
    """One job of a sweep as the launcher submitted it."""

    num: int
    overrides: list[str]
    scheduler_ids: list[str] = field(default_factory=list)  # one per (re)submission, latest last
    submitit_folder: str | None = None

    @property
    def name(self) -> str:
        """The job as a user names it: its overrides, e.g. ``model_variant=rm_lora layer=20``."""
        return " ".join(o for o in self.overrides if not o.startswith("hydra.")) or f"job {self.num}"


@dataclass
class Manifest:
    """``sweep.json``."""

    stage: str
    launcher: str                       # local | slurm
    jobs: list[JobRecord]
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    command: list[str] = field(default_factory=list)
    launcher_params: dict = field(default_factory=dict)   # the settings the latest submission used
    resubmissions: list[dict] = field(default_factory=list)  # {time, jobs, overrides, scheduler_ids}
    schema_version: int = SCHEMA_VERSION


@dataclass
class JobStatus:
    """What became of one job (see :func:`job_states`)."""

    num: int
    name: str
    state: str                          # pending | running | done | failed | cancelled | lost
    scheduler_id: str | None = None
    scheduler_state: str | None = None
    output_dir: str | None = None
    log: str | None = None
    error: str | None = None
    attempts: int = 0                   # attempts that started (the job's own count)
    reason: str | None = None           # SLURM's reason while pending (Priority, BeginTime ...)
    attempt: int = 0                    # the attempt this state is about (a pending requeue: next)


_JOB_KEYS = {f.name for f in fields(JobRecord)}
_MANIFEST_KEYS = {f.name for f in fields(Manifest)} - {"jobs"}


def manifest_path(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / "sweep.json"


def job_file(sweep_dir: Path, num: int) -> Path:
    return Path(sweep_dir) / "jobs" / f"{int(num)}.json"


def write_manifest(sweep_dir: Path, manifest: Manifest) -> None:
    write_json(manifest_path(sweep_dir), asdict(manifest))


def read_manifest(sweep_dir: Path) -> Manifest:
    path = manifest_path(sweep_dir)
    if not path.is_file():
        raise PipelineError(
            f"{sweep_dir} is not a sweep folder of this project (no sweep.json); expected "
            "experiments/{experiment}/sweeps/{stage}/{timestamp}"
        )
    raw = read_json(path)
    jobs = [JobRecord(**{k: v for k, v in j.items() if k in _JOB_KEYS}) for j in raw.pop("jobs")]
    # keys a newer version added are kept out rather than refused
    return Manifest(jobs=jobs, **{k: v for k, v in raw.items() if k in _MANIFEST_KEYS})


def mark_job(sweep_dir: Path, num: int, state: str, **info) -> None:
    """Record a job's own view of itself; called by the job (attempt counts SLURM restarts)."""
    path = job_file(sweep_dir, num)
    old = read_json_for_update(path) or {}
    rec = {**old, **info, "state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if state == "running":
        rec.update(host=socket.gethostname(), pid=os.getpid(), attempts=int(old.get("attempts", 0)) + 1,
                   scheduler_id=current_scheduler_id(), error=None)
    write_json(path, rec)


def current_scheduler_id() -> str | None:
    """This process's SLURM job id (``123_4`` for an array task), or None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


# scheduler ----------------------------------------------------------------------------------
def slurm_available() -> bool:
    return shutil.which("squeue") is not None


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


@dataclass
class SchedulerInfo:
    """What SLURM says about one job: its state, and while pending, why."""

    state: str
    reason: str | None = None
    restarts: int = 0                   # how often SLURM requeued it (squeue's RestartCnt)


def scheduler_info(ids: list[str]) -> dict[str, SchedulerInfo]:
    """SLURM's view of each job id (``123`` or ``123_4``); ids SLURM no longer knows are left out.

    squeue covers queued, running and recently ended jobs (with the pending reason); older
    ones come from sacct where accounting is on, else from scontrol (which remembers a job
    for ``MinJobAge`` seconds).
    """
    ids = [str(i) for i in ids if i]
    if not ids or not slurm_available():
        return {}
    found: dict[str, SchedulerInfo] = {}
    arrays = sorted({i.split("_")[0] for i in ids})
    for array in arrays:  # one call per array: squeue fails whole on an id it has forgotten
        out = _run(["squeue", "-h", "-r", "-t", "all", "-O", "JobArrayID:0|,State:0|,RestartCnt:0|,Reason:0",
                    "-j", array])
        whole = None
        for line in (out or "").splitlines():
            jid, state, restarts, reason = (line.strip().split("|", 3) + ["", "", ""])[:4]
            info = SchedulerInfo(state.split()[0] if state else "UNKNOWN",
                                 reason.strip() if reason.strip() not in ("", "None") else None,
                                 int(restarts) if restarts.strip().isdigit() else 0)
            found[jid] = info
            if jid == array:
                whole = info
        if whole is not None:  # tasks that never started and were cancelled: one record, the array's
            for i in ids:
                if i.startswith(array + "_") and i not in found:
                    found[i] = whole
    missing = [i for i in ids if i not in found]
    if missing and shutil.which("sacct"):
        out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(missing)])
        for line in (out or "").splitlines():
            jid, _, state = line.strip().partition("|")
            if jid in missing and state:
                found[jid] = SchedulerInfo(state.split()[0])
    missing = [i for i in ids if i not in found]
    for array in sorted({i.split("_")[0] for i in missing}):
        out = _run(["scontrol", "-o", "show", "job", array])
        for line in (out or "").splitlines():
            kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
            jids = [kv.get("JobId", "")]
            task = kv.get("ArrayTaskId", "N/A")
            if task not in ("N/A", "") and "ArrayJobId" in kv:
                # tasks never started share one record: ArrayTaskId=1-3%1 (or no task id at all
                # once such a record is cancelled)
                tasks = _expand_tasks(task)
                jids = ([i for i in missing if i.startswith(kv["ArrayJobId"] + "_")]
                        if not tasks or tasks == [4294967294] else [f"{kv['ArrayJobId']}_{t}" for t in tasks])
            for jid in jids:
                if jid in missing and "JobState" in kv:
                    reason = kv.get("Reason")
                    found[jid] = SchedulerInfo(kv["JobState"], reason if reason not in (None, "None") else None,
                                               int(kv.get("Restarts", "0") or 0))
    return {i: found[i] for i in ids if i in found}


def scheduler_states(ids: list[str]) -> dict[str, str]:
    """SLURM state of each job id; see :func:`scheduler_info`."""
    return {k: v.state for k, v in scheduler_info(ids).items()}


def _expand_tasks(spec: str) -> list[int]:
    """``1-3%1`` -> ``[1, 2, 3]``; ``0,4-5`` -> ``[0, 4, 5]``."""
    out: list[int] = []
    for part in spec.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out += list(range(int(lo), int(hi) + 1)) if hi.isdigit() else [int(lo)]
    return out


def job_states(sweep_dir: Path, query_scheduler: bool = True) -> list[JobStatus]:
    """The state of every job of a sweep, in job order (see module docstring)."""
    sweep_dir = Path(sweep_dir)
    manifest = read_manifest(sweep_dir)
    latest = {j.num: j.scheduler_ids[-1] for j in manifest.jobs if j.scheduler_ids}
    sched = scheduler_info(list(latest.values())) if query_scheduler else {}
    slurm_asked = query_scheduler and slurm_available()
    known_arrays = {i.split("_")[0] for i in sched}
    out = []
    for job in manifest.jobs:
        path = job_file(sweep_dir, job.num)
        own = read_json(path) if path.is_file() else {}
        sid = latest.get(job.num)
        info = sched.get(sid) if sid else None
        attempts = int(own.get("attempts", 0))
        st = JobStatus(
            num=job.num, name=job.name, state="pending", scheduler_id=sid,
            scheduler_state=info.state if info else None, output_dir=own.get("output_dir"),
            log=own.get("log"), error=own.get("error"), attempts=attempts, attempt=max(attempts, 1),
        )
        file_state, sched_state = own.get("state"), st.scheduler_state
        active = _SLURM_ACTIVE.get(sched_state or "")
        if active == "pending":
            # SLURM first: a requeued job's file still says running (or killed) from the attempt
            # SLURM stopped; the job waits for its next attempt
            st.state, st.reason, st.error = "pending", info.reason if info else None, None
            st.attempt = max(attempts + 1, info.restarts + 1 if info else 1)
        elif active == "running":
            st.state, st.error = "running", None
            st.attempt = max(attempts, info.restarts + 1 if info else 1)
        elif file_state == "done":
            st.state = "done"
        elif file_state == "failed":
            st.state = "failed"
        elif sched_state:
            st.state = _SLURM_DONE.get(sched_state, "failed")
            if st.state == "done":  # SLURM says COMPLETED, the job never said so: it was killed
                st.state = "lost"
            if st.state != "cancelled" and not st.error:
                st.error = f"SLURM state {sched_state}"
        elif file_state in ("running", "killed"):
            local = manifest.launcher == "local" and own.get("host") == socket.gethostname()
            st.state = "running" if (not local or pid_alive(own.get("pid"))) else "lost"
            if file_state == "killed" or (sid and slurm_asked):
                st.state = "lost"  # SLURM forgot it and it never finished
        elif sid and slurm_asked and not own and "_" in sid and sid.split("_")[0] in known_arrays:
            # An array task cancelled while it waited with its siblings in one record: SLURM
            # drops it from the record's task range and keeps no trace of it, while its
            # siblings are still listed. It never started (no job file): it was cancelled.
            st.state, st.reason = "cancelled", "removed from the queue before it started"
        elif sid and slurm_asked:
            st.state = "lost"
        out.append(st)
    return out


def summary(states: list[JobStatus]) -> str:
    """``4 jobs: 3 done, 1 failed``."""
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    order = ("done", "running", "pending", "failed", "cancelled", "lost")
    parts = [f"{counts[k]} {k}" for k in order if k in counts]
    return f"{len(states)} jobs: " + ", ".join(parts)
