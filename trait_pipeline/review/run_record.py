"""``runs/<id>/run.json``: what became of one job, and where its resolved snapshot is.

Every job of every stage gets one (the entry points write it, see :mod:`trait_pipeline.cli`)::

    {"schema_version": 1, "status": "running|done|failed|killed", "stage": "steer",
     "experiment": "demo", "model_variant": "rm_lora", "trait": "demo/optimism",
     "model": "demo:instruct", "lora": "demo:rm_lora",
     "started": "...", "ended": "...", "overrides": ["model_variant=rm_lora", "layer=10"],
     "snapshot": ".hydra/resolved.yaml", "output_dir": ".../steering/...",
     "host": "node1", "pid": 1234, "run_id": "2026-..._ab12",
     "error"?: "...", "signal"?: "SIGTERM", "sweep_id"?: "...", "job_num"?: 3, "attempt"?: 1,
     "result"?: {...}}

``result`` is the job's main measurement (best val accuracy, best delta over baseline, mean
projection) and is absent when the job measured nothing (e.g. a rerun that found everything
done): such a folder, a killed attempt, or a ``running`` record whose process is gone
(:func:`effective_status` says ``lost``) is never data.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> rec = RunRecord(status="running", stage="steer", experiment="demo", model_variant="base",
...                 trait="demo/optimism", overrides=[])
>>> write(d, rec); read(d).status
'running'
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..jsonio import write_json

SCHEMA_VERSION = 1
RECORD_NAME = "run.json"
STATUSES = ("running", "done", "failed", "killed")


@dataclass
class RunRecord:
    """One job's record; see the module docstring for the file."""

    status: str
    stage: str | None
    experiment: str | None
    model_variant: str | None
    trait: Any
    overrides: list[str]
    model: str | None = None
    lora: str | None = None
    started: str = ""
    ended: str | None = None
    snapshot: str | None = None
    output_dir: str | None = None
    run_id: str | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None = None
    signal: str | None = None
    sweep_id: str | None = None
    job_num: int | None = None
    attempt: int | None = None
    result: dict | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)  # keys other writers added; kept on rewrite

    def to_json(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        d = {k: v for k, v in d.items() if v is not None or k in ("ended", "snapshot")}
        return {**extra, **d}

    @classmethod
    def from_json(cls, data: dict) -> RunRecord:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("status", "running")
        for k in ("stage", "experiment", "model_variant", "trait"):
            known.setdefault(k, None)
        known.setdefault("overrides", [])
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def record_path(run_dir: Path) -> Path:
    return Path(run_dir) / RECORD_NAME


def write(run_dir: Path, rec: RunRecord) -> None:
    write_json(record_path(run_dir), rec.to_json())


def read(run_dir: Path) -> RunRecord | None:
    """The record of a run folder, or None when it has none (or an unreadable one)."""
    import json

    path = record_path(run_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return RunRecord.from_json(data) if isinstance(data, dict) else None


def mark(run_dir: Path, **changes: Any) -> RunRecord | None:
    """Update fields of an existing record (e.g. ``status="killed", signal="SIGTERM"``)."""
    rec = read(run_dir)
    if rec is None:
        return None
    for k, v in changes.items():
        if hasattr(rec, k) and k != "extra":
            setattr(rec, k, v)
        else:
            rec.extra[k] = v
    if changes.get("status") in ("done", "failed", "killed") and not rec.ended:
        rec.ended = now()
    write(run_dir, rec)
    return rec


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    return True


def effective_status(rec: RunRecord) -> str:
    """The record's status, or ``lost`` when it says running but its process is gone."""
    if rec.status == "running" and rec.host == socket.gethostname() and not pid_alive(rec.pid):
        return "lost"
    return rec.status


def is_data(rec: RunRecord | None) -> bool:
    """Whether a run counts as a measurement: finished, and it measured something."""
    return rec is not None and effective_status(rec) == "done" and bool(rec.result)


# --- the job in this process ------------------------------------------------------------------
@dataclass
class ActiveRun:
    """The run this process is executing: its folder and record."""

    run_dir: Path
    record: RunRecord

    @property
    def snapshot_file(self) -> Path:
        from .snapshot import snapshot_path

        return snapshot_path(self.run_dir)

    def link_from(self, base: Path) -> str:
        """The snapshot's path relative to ``base`` (how result files point at it)."""
        snap = self.snapshot_file.resolve()
        try:
            return os.path.relpath(snap, Path(base).resolve())
        except ValueError:  # another drive
            return str(snap)

    def finish(self, status: str, **info: Any) -> None:
        disk = read(self.run_dir)
        if disk is not None and disk.status == "killed" and status != "done":
            return  # the launcher marked this attempt killed (a signal): that is what happened
        if disk is not None:
            self.record.extra.update(disk.extra)  # keys another writer added meanwhile
        self.record.status = status
        self.record.ended = now()
        for k, v in info.items():
            setattr(self.record, k, v)
        write(self.run_dir, self.record)


_ACTIVE: ActiveRun | None = None


def active() -> ActiveRun | None:
    """The run of this process (None outside a Hydra job, e.g. a stage called directly)."""
    return _ACTIVE


def snapshot_link(base: Path) -> str | None:
    """The active run's snapshot, relative to ``base``; None when there is no active run."""
    return None if _ACTIVE is None else _ACTIVE.link_from(base)


def start(run_dir: Path, config: dict, *, stage: str | None, overrides: list[str],
          run_id: str | None = None, sweep_id: str | None = None,
          job_num: int | None = None) -> ActiveRun:
    """Write the resolved snapshot and a ``running`` record; make this run the active one."""
    global _ACTIVE
    from . import snapshot

    run_dir = Path(run_dir)
    snap = snapshot.build(config, stage=stage, run_id=run_id, overrides=overrides)
    snap_file = snapshot.write(run_dir, snap)
    previous = read(run_dir)  # a requeued attempt runs again in the same folder
    rec = RunRecord(
        status="running", stage=stage, experiment=config.get("experiment"),
        model_variant=(config.get("model_variant") or {}).get("name"), trait=config.get("trait"),
        model=(config.get("model_variant") or {}).get("model"),
        lora=(config.get("model_variant") or {}).get("lora"), overrides=list(overrides), started=now(), snapshot=snap_file.relative_to(run_dir).as_posix(),
        output_dir=config.get("output_dir"), run_id=run_id, host=socket.gethostname(),
        pid=os.getpid(), sweep_id=sweep_id, job_num=job_num,
        attempt=(previous.attempt or 1) + 1 if previous is not None else None,
        extra=previous.extra if previous is not None else {},
    )
    write(run_dir, rec)
    _ACTIVE = ActiveRun(run_dir, rec)
    return _ACTIVE


def stop() -> None:
    global _ACTIVE
    _ACTIVE = None


def note_model(lm: Any) -> None:
    """Called by the model loader: record device, dtype and what the weights resolved to."""
    if _ACTIVE is None:
        return
    from . import snapshot

    spec = lm.spec
    model = getattr(lm.model, "base_model", None)
    inner = getattr(model, "model", None) if model is not None else None
    hf_model = inner if inner is not None and hasattr(inner, "config") else lm.model
    commit = getattr(getattr(hf_model, "config", None), "_commit_hash", None)
    try:
        from ..models import resolve_ref

        model_prov = snapshot.weights_provenance(spec.model, resolve_ref(spec.model), spec.revision, commit)
        adapter_prov = (snapshot.weights_provenance(spec.lora, resolve_ref(spec.lora, "lora adapter"))
                        if spec.lora else None)
    except Exception as exc:  # noqa: BLE001 -- provenance must never fail the job
        model_prov, adapter_prov = {"ref": spec.model, "error": " ".join(str(exc).split())}, None
    try:
        dtype = str(next(lm.model.parameters()).dtype).replace("torch.", "")
    except (StopIteration, AttributeError):
        dtype = None
    snapshot.add_runtime(_ACTIVE.run_dir, device=str(lm.device), dtype=dtype, model=model_prov,
                         adapter=adapter_prov)
