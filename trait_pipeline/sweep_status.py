"""``trait-pipeline status <sweep dir>`` (``python -m trait_pipeline.sweep_status``): what became of each job.

Reads the sweep folder the launchers write (:mod:`trait_pipeline.sweeps`) and asks SLURM
(squeue, sacct, scontrol) first::

    $ trait-pipeline status experiments/demo/sweeps/steer/2026-11-27_11-14-38
    #0   done       2_0  model_variant=instruct layer=10
    #1   failed     2_1  model_variant=instruct layer=99  error: ValueError: ... log: .../steer.log
    #2   pending    2_2  model_variant=rm_lora layer=10  (BeginTime, attempt 2)
    3 jobs: 1 done, 1 pending, 1 failed

Given a stage's sweeps folder (``experiments/demo/sweeps/steer``) it picks the latest sweep.
``--resubmit`` sends every failed, cancelled or lost job again (SLURM: a new array; local:
here); settings after it change the launcher's for those jobs and are recorded in
``sweep.json``: ``--resubmit hydra.launcher.cpus_per_task=1 hydra.launcher.timeout_min=30``.
The stages skip what is already on disk, so the jobs pick up where they stopped.
``--wait`` waits for the resubmitted jobs.

Exit status, first match wins: 3 while any job is pending or running; 1 if any failed, was
cancelled or lost; 0 all done; 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .errors import PipelineError, one_line
from .sweeps import (
    ACTIVE,
    LAUNCH_FILE,
    JobStatus,
    job_states,
    manifest_path,
    read_manifest,
    summary,
)


def find_sweep(path: Path) -> Path:
    """A sweep folder, or the latest sweep in a stage's sweeps folder."""
    path = Path(path)
    if manifest_path(path).is_file():
        return path
    if path.is_dir():
        sweeps = sorted(p for p in path.iterdir() if manifest_path(p).is_file())
        if sweeps:
            return sweeps[-1]
    raise PipelineError(
        f"no sweep at {path}: expected a folder with sweep.json, "
        "e.g. experiments/demo/sweeps/steer/2026-11-27_11-14-38 (or its parent for the latest)"
    )


def format_states(states: list[JobStatus]) -> str:
    width = max([len(s.scheduler_id or "-") for s in states] + [1])
    lines = []
    for s in states:
        extra = ""
        if s.state == "pending" and (s.reason or s.attempt > 1):
            extra += "  (" + ", ".join(x for x in (s.reason, f"attempt {s.attempt}" if s.attempt > 1 else None) if x) + ")"
        elif s.state == "running" and s.attempt > 1:
            extra += f"  (attempt {s.attempt})"
        if s.state != "done" and s.error:
            extra += f"  error: {s.error}"
        if s.state in ("failed", "lost", "running") and s.log:
            extra += f"  log: {s.log}"
        lines.append(f"#{s.num:<3} {s.state:<10} {(s.scheduler_id or '-'):<{width}}  {s.name}{extra}")
    lines.append(summary(states))
    return "\n".join(lines)


def exit_status(states: list[JobStatus]) -> int:
    """3 while anything is pending or running, else 1 if anything failed/was cancelled/lost, else 0.

    A script polling ``until [ $? -ne 3 ]`` thus waits for the whole sweep, even after a failure.
    """
    if any(s.state in ACTIVE for s in states):
        return 3
    if any(s.state in ("failed", "cancelled", "lost") for s in states):
        return 1
    return 0


def parse_launcher_overrides(items: list[str], params_cls: type) -> dict[str, Any]:
    """``["hydra.launcher.cpus_per_task=1"]`` -> ``{"cpus_per_task": 1}``, checked against the settings."""
    import typing

    import yaml

    known = {f.name: f for f in fields(params_cls)}
    hints = typing.get_type_hints(params_cls)
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        name = key.removeprefix("hydra.launcher.")
        if not eq or not key.startswith("hydra.launcher."):
            raise PipelineError(
                f"cannot resubmit with {item!r}: only launcher settings can change, as "
                "hydra.launcher.KEY=VALUE (e.g. hydra.launcher.cpus_per_task=1); a job's own "
                "overrides are fixed by the sweep")
        if name not in known:
            raise PipelineError(f"unknown setting {key} for the {params_cls.__name__.removesuffix('Params').lower()} "
                                f"launcher; expected one of: {', '.join(sorted(known))}")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if not _fits(value, hints[name]):
            raise PipelineError(f"{key}={raw}: expected {_type_name(hints[name])}")
        out[name] = float(value) if hints[name] in (float, float | None) and isinstance(value, int) else value
    return out


def _fits(value: Any, hint: Any) -> bool:
    import typing

    args = typing.get_args(hint)
    if args and type(None) in args:
        return value is None or any(_fits(value, a) for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def resubmit(sweep_dir: Path, wait: bool = False, overrides: list[str] | None = None) -> list[int]:
    """Send the failed / cancelled / lost jobs of a sweep again; returns their numbers.

    ``overrides`` (``hydra.launcher.KEY=VALUE``) change the launcher settings for these jobs
    (and later resubmissions); the sweep manifest records them.
    """
    import cloudpickle

    from hydra_plugins.trait_pipeline_launchers import launchers as L

    launch = sweep_dir / LAUNCH_FILE
    if not launch.is_file():
        raise PipelineError(f"cannot resubmit: {launch} is missing (a sweep from another launcher?)")
    manifest = read_manifest(sweep_dir)
    payload = cloudpickle.loads(launch.read_bytes())
    cls = L.SlurmParams if payload["launcher"] == "slurm" else L.LocalParams
    changes = parse_launcher_overrides(list(overrides or []), cls)
    redo = [s.num for s in job_states(sweep_dir) if s.state in ("failed", "cancelled", "lost")]
    if not redo:
        return []
    names = {f.name for f in fields(cls)}
    settings = {**payload["params"], **{k: v for k, v in manifest.launcher_params.items() if k in names}}
    params = cls(**{**settings, **changes})
    jobs = {j.num: j.overrides for j in manifest.jobs}
    job_overrides = [jobs[n] for n in redo]
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": redo, "overrides": list(overrides or [])}
    if payload["launcher"] == "slurm":
        L.check_slurm_request(params)
        submitted = L.submit_slurm(params, payload["job"], sweep_dir, redo, job_overrides, manifest.stage,
                                   record=entry)
        print(f"resubmitted {len(redo)} jobs as SLURM array {submitted[0].job_id.split('_')[0]}"
              + (f" with {' '.join(overrides or [])}" if overrides else ""), flush=True)
        if wait:
            L.wait_slurm(sweep_dir, redo, submitted, params)
    else:
        L.record_resubmission(sweep_dir, params, entry)
        L.run_local(payload["job"], sweep_dir, redo, job_overrides, int(params.n_jobs))
    return redo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trait_pipeline.sweep_status",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path, help="a sweep folder, or a stage's sweeps folder (latest)")
    ap.add_argument("--json", action="store_true", help="print the states as JSON")
    ap.add_argument("--resubmit", nargs="*", metavar="hydra.launcher.KEY=VALUE", default=None,
                    help="send failed/cancelled/lost jobs again, optionally with changed launcher "
                         "settings, e.g. --resubmit hydra.launcher.cpus_per_task=1")
    ap.add_argument("--wait", action="store_true", help="with --resubmit: wait for those jobs")
    args = ap.parse_args(argv)
    try:
        sweep_dir = find_sweep(args.sweep_dir).absolute()
        if args.resubmit is not None:
            redo = resubmit(sweep_dir, wait=args.wait, overrides=args.resubmit)
            if not redo:
                print("nothing to resubmit")
        states = job_states(sweep_dir)
    except PipelineError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"sweep_dir": str(sweep_dir), "jobs": [asdict(s) for s in states]}, indent=2))
    else:
        print(f"sweep {sweep_dir}")
        print(format_states(states))
    return exit_status(states)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `| head`
        sys.exit(0)
    except KeyboardInterrupt:  # Ctrl-C outside a --wait (which says more itself)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
