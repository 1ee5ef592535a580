"""Marking the run folder of an attempt that SLURM killed (requeue, preemption, scancel).

Every attempt of a job gets its own run folder (``runs/{run_id}_sweep-{sweep id}_job{num}``).
An attempt that SLURM stopped leaves a folder that looks like any other: a ``.hydra/``
snapshot and a log ending mid-way. :func:`mark_killed` writes into the folder's ``run.json``
(the run record the ``runs`` listing and the dashboard read) ``status: killed``, the
signal, the attempt number and the sweep id, so they skip it. It merges: other keys of
the record are kept, and a record that already says ``done`` or ``failed`` is left alone.

>>> import tempfile, json
>>> d = Path(tempfile.mkdtemp())
>>> mark_killed(d, signal="SIGTERM", attempt=1, sweep_id="2026-11-29_21-00-00")
True
>>> json.loads((d / "run.json").read_text())["status"]
'killed'
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from ..jsonio import write_json

RECORD = "run.json"  # the run record of trait_pipeline.review.run_record (same file, same keys)
FINAL = ("done", "failed", "killed")


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_record(run_dir: Path) -> dict:
    """The folder's run record, or ``{}`` when it has none or an unreadable one."""
    path = Path(run_dir) / RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def mark_killed(run_dir: Path, *, signal: str | None, attempt: int | None, sweep_id: str | None,
                force: bool = False) -> bool:
    """Record that this attempt was killed; False if the folder is gone or the run already ended.

    ``force``: the signal is known to have stopped the run (a ``failed`` written while it
    unwound is overwritten; ``done`` never is).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    rec = read_record(run_dir)
    if rec.get("status") == "done" or (rec.get("status") in FINAL and not force):
        return False
    rec.setdefault("schema_version", 1)
    rec.update(status="killed", signal=signal or "unknown", ended=_now())
    if attempt is not None:
        rec["attempt"] = int(attempt)
    if sweep_id is not None:
        rec["sweep_id"] = sweep_id
    write_json(run_dir / RECORD, rec)
    return True
