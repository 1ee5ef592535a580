"""The dashboard's review data: the runs of an experiment, one run's resolved config, two
runs' diff, and which model/adapter each variant loads (from the runs' snapshots).

Run folders are named by their path relative to the experiment folder, and confirmed to lie
inside it before anything is read.

>>> import tempfile
>>> runs_of(Path(tempfile.mkdtemp()))
[]
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PipelineError
from ..layout import LayoutError
from . import run_record, snapshot
from .diff import compare, format_diff, run_folder
from .runs import RunInfo, find_runs, format_result


class RunNotFound(PipelineError):
    """No such run folder (HTTP 404)."""


def _inside(root: Path, rel: str) -> Path:
    if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts or "\\" in rel or "\x00" in rel:
        raise LayoutError(f"bad run {rel!r}: expected a folder relative to the experiment")
    real_root = root.resolve()
    path = (root / rel).resolve()
    if real_root not in path.parents:
        raise LayoutError(f"run {rel!r} is outside the experiment folder")
    if not path.is_dir():
        raise RunNotFound(f"no run folder {rel}")
    return path


def _row(root: Path, info: RunInfo) -> dict:
    rec = info.record
    return {
        "run": info.path.resolve().relative_to(root.resolve()).as_posix(),
        "started": rec.started if rec else None, "stage": rec.stage if rec else None,
        "model_variant": rec.model_variant if rec else None, "trait": rec.trait if rec else None,
        "model": rec.model if rec else None, "lora": rec.lora if rec else None,
        "overrides": rec.overrides if rec else [], "status": info.status, "is_data": info.is_data,
        "result": format_result(rec), "has_snapshot": snapshot.snapshot_path(info.path).is_file(),
    }


def runs_of(exp_root: Path) -> list[dict]:
    """Every run folder of an experiment, oldest first."""
    if not exp_root.is_dir():
        return []
    infos = find_runs(exp_root)
    infos.sort(key=lambda i: (i.started.timestamp() if i.started else 0, str(i.path)))
    return [_row(exp_root, i) for i in infos]


def run_config(exp_root: Path, rel: str) -> dict:
    """One run's record and resolved snapshot (config + provenance), and its YAML text."""
    path = _inside(exp_root, rel)
    snap_file = snapshot.snapshot_path(path)
    rec = run_record.read(path)
    if snap_file.is_file():
        snap = snapshot.read(snap_file)
        text = snapshot.dump(snap)
    else:
        side = run_folder(path)  # legacy: resolved now, with a note saying so
        snap = {"config": side.config, "provenance": side.provenance, "notes": side.notes}
        import yaml

        text = yaml.safe_dump({"config": side.config}, sort_keys=False)
    return {"run": rel, "record": rec.to_json() if rec else None, "snapshot": snap, "text": text}


def run_diff(exp_root: Path, a: str, b: str, show_all: bool = False) -> dict:
    """Two runs' diff, as data and as the text ``trait-pipeline diff`` prints."""
    pa, pb = _inside(exp_root, a), _inside(exp_root, b)
    d = compare(run_folder(pa, a), run_folder(pb, b), show_all=show_all)
    return {**d.to_json(), "text": format_diff(d)}


def run_dir_of(link_base: Path, link: str | None) -> Path | None:
    """The run folder a result's ``snapshot`` link points into (``runs/<id>/.hydra/resolved.yaml``)."""
    if not link:
        return None
    path = (link_base / link).resolve()
    return path.parent.parent if path.is_file() else None


def variant_info(exp_root: Path) -> dict[str, dict]:
    """``{variant: {model, lora}}`` from the newest run of each variant that recorded them."""
    out: dict[str, dict] = {}
    for row in runs_of(exp_root):
        v = row["model_variant"]
        if v and row["model"]:
            out[v] = {"model": row["model"], "lora": row["lora"]}
    return out
