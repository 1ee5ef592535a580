"""``trait-pipeline runs [path]``: one line per run, newest last.

Reads every ``runs/<id>/run.json`` under ``path`` (default: the experiments directory; a
sweep folder lists its jobs). Each line: start time, stage, experiment, variant, trait, the
overrides beyond those columns, status, and the main result (best val accuracy / best delta
over baseline / mean projection / mean difference).

Statuses: ``done``; ``done, no result`` (the job measured nothing new, e.g. a rerun that found
everything on disk); ``failed``; ``killed`` (a signal, or SLURM preemption); ``lost`` (its
record says running but the process is gone); ``running``; ``no record`` (a folder from before
run records existed). Only ``done`` with a result counts as data.

    $ trait-pipeline runs
    $ trait-pipeline runs experiments/demo variant=rm_lora stage=steer --since 2h
    $ trait-pipeline runs --json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError, one_line
from . import run_record

# big leaf folders a run folder never sits in
_PRUNE = {"raw", "activations", "responses", "projections", "vectors", "vetting", ".hydra",
          ".migration", ".submitit", "jobs", "replay"}
_COLUMNS = ("experiment", "model_variant", "trait")
FILTER_KEYS = {"variant": "model_variant", "model_variant": "model_variant", "trait": "trait",
               "stage": "stage", "experiment": "experiment", "status": "status"}


@dataclass
class RunInfo:
    """A run folder and what its record says (``record`` None: a folder without one)."""

    path: Path
    record: run_record.RunRecord | None

    @property
    def status(self) -> str:
        if self.record is None:
            return "no record"
        st = run_record.effective_status(self.record)
        if st == "done" and not self.record.result:
            return "done, no result"
        return st

    @property
    def is_data(self) -> bool:
        return run_record.is_data(self.record)

    @property
    def started(self) -> _dt.datetime | None:
        if self.record is not None and self.record.started:
            try:
                return _dt.datetime.fromisoformat(self.record.started)
            except ValueError:
                pass
        try:
            return _dt.datetime.fromtimestamp(self.path.stat().st_mtime).astimezone()
        except OSError:
            return None

    def field(self, name: str):
        if name == "status":
            return self.status
        return None if self.record is None else getattr(self.record, name, None)

    def to_json(self) -> dict:
        rec = self.record.to_json() if self.record else {}
        return {**rec, "path": str(self.path), "status": self.status, "is_data": self.is_data,
                "recorded_status": rec.get("status")}


def find_runs(path: Path) -> list[RunInfo]:
    """Every run folder under ``path`` (a run folder itself, a sweep folder, or any tree)."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"no such folder {path}: expected an experiments folder, an experiment, "
                            "a sweep folder or a run folder (no run has written there yet?)")
    if run_record.record_path(path).is_file() or (path / ".hydra").is_dir():
        return [RunInfo(path, run_record.read(path))]
    if (path / "jobs").is_dir() and (path / "multirun.yaml").is_file() or (path / "sweep.json").is_file():
        out = []
        for f in sorted((path / "jobs").glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0):
            try:
                d = json.loads(f.read_text(encoding="utf-8")).get("output_dir")
            except (OSError, json.JSONDecodeError):
                continue
            if d and Path(d).is_dir():
                out.append(RunInfo(Path(d), run_record.read(Path(d))))
        return out
    out = []
    for dirpath, dirnames, _ in os.walk(path):
        if os.path.basename(dirpath) == "runs":
            for name in sorted(dirnames):
                d = Path(dirpath) / name
                if run_record.record_path(d).is_file() or (d / ".hydra").is_dir():
                    out.append(RunInfo(d, run_record.read(d)))
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d not in _PRUNE]
    return out


_REL = re.compile(r"^(\d+)\s*(m|min|h|d|w)$")


def parse_since(text: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """``30m``, ``2h``, ``3d``, ``1w``, or an ISO date/time.

    >>> ref = _dt.datetime(2026, 1, 2, tzinfo=_dt.timezone.utc)
    >>> parse_since("1d", ref).isoformat()
    '2026-01-01T00:00:00+00:00'
    """
    now = now or _dt.datetime.now().astimezone()
    m = _REL.match(text.strip())
    if m:
        unit = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return now - _dt.timedelta(**{unit: int(m.group(1))})
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise PipelineError(f"bad --since {text!r}: expected e.g. 30m, 2h, 3d, 1w or 2026-11-29[T12:00]") from None
    return when if when.tzinfo else when.astimezone()


def _matches(info: RunInfo, filters: dict[str, str]) -> bool:
    for key, want in filters.items():
        have = info.field(key)
        values = [str(x) for x in have] if isinstance(have, list) else [str(have)]
        if key == "status":
            if not str(have).startswith(want):
                return False
        elif want not in values:
            return False
    return True


def format_result(rec: run_record.RunRecord | None) -> str:
    r = (rec.result if rec else None) or {}
    v = r.get("value")
    metric = r.get("metric")
    if metric == "val_accuracy" and v is not None:
        note = "" if r.get("beats_null", True) else ", not above the null"
        return f"val acc {v:.3f} ({r.get('method')} L{r.get('layer')}{note})"
    if metric == "delta":
        if v is None:
            return f"no delta ({r.get('n_runs')} runs)"
        where = f"L{'+'.join(map(str, r.get('layers') or []))} c{'/'.join(f'{c:g}' for c in r.get('coefs') or [] if c is not None)}"
        coh = r.get("coherence_mean")
        flag = "" if r.get("coherent") else f", below coherence {r.get('min_coherence'):g}"
        return f"delta {v:+.1f} ({where}, coh {coh:.0f}{flag}; {r.get('n_runs')} runs)" if coh is not None \
            else f"delta {v:+.1f} ({where})"
    if metric == "mean_projection" and v is not None:
        return f"mean proj {v:+.3f}"
    if metric == "mean_diff" and v is not None:
        return f"diff {v:+.3f} ({r.get('b')} - {r.get('a')})"
    return ""


def _extra_overrides(rec: run_record.RunRecord | None) -> str:
    if rec is None:
        return ""
    keep = [o for o in rec.overrides if o.split("=", 1)[0].lstrip("+~") not in
            (*_COLUMNS, "paths.experiments") and not o.startswith("hydra")]
    return " ".join(keep)


def format_line(info: RunInfo) -> str:
    rec = info.record
    when = info.started.strftime("%Y-%m-%d %H:%M") if info.started else "?"
    trait = rec.trait if rec else None
    trait = ",".join(map(str, trait)) if isinstance(trait, list) else (trait or "-")
    cells = [when, (rec.stage if rec else None) or "?", (rec.experiment if rec else None) or "?",
             (rec.model_variant if rec else None) or "?", trait]
    status = info.status
    if rec is not None and status in ("failed", "killed") and (rec.error or rec.signal):
        status += f" ({rec.signal or one_line(rec.error)[:60]})"
    line = "  ".join([f"{cells[0]:<16}", f"{cells[1]:<7}", f"{cells[2]:<10}", f"{cells[3]:<9}",
                      f"{cells[4]:<16}", f"{status:<16}", format_result(rec)])
    extra = _extra_overrides(rec)
    return line.rstrip() + (f"  [{extra}]" if extra else "")


def summary(infos: list[RunInfo]) -> str:
    counts: dict[str, int] = {}
    for i in infos:
        key = i.status.split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    data = sum(i.is_data for i in infos)
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{len(infos)} runs: {data} with a result (data){'; ' + parts if parts else ''}"


def default_root() -> Path:
    from ..layout import default_experiments_dir

    return default_experiments_dir()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="trait-pipeline runs", description="One line per run: what ran, its status, its result.",
        usage="trait-pipeline runs [path] [variant=V] [trait=T] [stage=S] [experiment=E] "
              "[status=S] [--since 2h] [--data] [--json]")
    p.add_argument("args", nargs="*", help="a folder (default: the experiments dir) and key=value filters")
    p.add_argument("--since", help="only runs started since: 30m, 2h, 3d, 1w or an ISO date")
    p.add_argument("--data", action="store_true", help="only runs that count as data")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    try:
        path, filters = None, {}
        for a in args.args:
            if "=" in a and not Path(a).exists():
                k, v = a.split("=", 1)
                if k not in FILTER_KEYS:
                    raise PipelineError(f"unknown filter {k!r}; expected one of: {', '.join(FILTER_KEYS)}")
                filters[FILTER_KEYS[k]] = v
            elif path is None:
                path = Path(a)
            else:
                raise PipelineError(f"one folder only, got {path} and {a}")
        since = parse_since(args.since) if args.since else None
        infos = find_runs(path or default_root())
    except PipelineError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    infos = [i for i in infos if _matches(i, filters)
             and (since is None or (i.started is not None and i.started >= since))
             and (not args.data or i.is_data)]
    infos.sort(key=lambda i: (i.started.timestamp() if i.started else 0, str(i.path)))
    if args.json:
        print(json.dumps({"schema_version": 1, "runs": [i.to_json() for i in infos],
                          "n_data": sum(i.is_data for i in infos)}, indent=2, default=str))
        return 0
    for i in infos:
        print(format_line(i))
    print(summary(infos))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
