"""``python -m trait_pipeline.sweep_status <sweep dir>``: what became of each job of a sweep.

Reads the sweep folder the launchers write (:mod:`trait_pipeline.sweeps`) and asks SLURM
(squeue, sacct, scontrol) about jobs that have not said how they ended::

    $ python -m trait_pipeline.sweep_status experiments/demo/sweeps/steer/2026-11-27_11-14-38
    #0  done       2_0  model_variant=instruct layer=10
    #1  failed     2_1  model_variant=instruct layer=99  error: ... log: .../steer.log
    4 jobs: 3 done, 1 failed

Given a stage's sweeps folder (``experiments/demo/sweeps/steer``) it picks the latest sweep.
``--resubmit`` sends every failed, cancelled or lost job again, with the launcher settings
of the sweep (SLURM: a new array; local: here); the stages skip what is already on disk,
so the jobs pick up where they stopped. ``--wait`` waits for the resubmitted jobs.

Exit status: 0 all done, 1 some job failed / was cancelled / lost, 3 still running, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

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
        if s.state != "done" and s.error:
            extra += f"  error: {s.error}"
        if s.state in ("failed", "lost", "running") and s.log:
            extra += f"  log: {s.log}"
        lines.append(f"#{s.num:<3} {s.state:<10} {(s.scheduler_id or '-'):<{width}}  {s.name}{extra}")
    lines.append(summary(states))
    return "\n".join(lines)


def exit_status(states: list[JobStatus]) -> int:
    if any(s.state in ("failed", "cancelled", "lost") for s in states):
        return 1
    if any(s.state in ACTIVE for s in states):
        return 3
    return 0


def resubmit(sweep_dir: Path, wait: bool = False) -> list[int]:
    """Send the failed / cancelled / lost jobs of a sweep again; returns their numbers."""
    import cloudpickle

    launch = sweep_dir / LAUNCH_FILE
    if not launch.is_file():
        raise PipelineError(f"cannot resubmit: {launch} is missing (a sweep from another launcher?)")
    redo = [s.num for s in job_states(sweep_dir) if s.state in ("failed", "cancelled", "lost")]
    if not redo:
        return []
    payload = cloudpickle.loads(launch.read_bytes())
    jobs = {j.num: j.overrides for j in read_manifest(sweep_dir).jobs}
    overrides = [jobs[n] for n in redo]
    from hydra_plugins.trait_pipeline_launchers import launchers as L

    if payload["launcher"] == "slurm":
        params = L.SlurmParams(**payload["params"])
        stage = read_manifest(sweep_dir).stage
        submitted = L.submit_slurm(params, payload["job"], sweep_dir, redo, overrides, stage)
        print(f"resubmitted {len(redo)} jobs as SLURM array {submitted[0].job_id.split('_')[0]}",
              flush=True)
        if wait:
            L.wait_slurm(sweep_dir, redo, submitted, params.poll_s)
    else:
        L.run_local(payload["job"], sweep_dir, redo, overrides, int(payload["params"].get("n_jobs", 1)))
    return redo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trait_pipeline.sweep_status",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path, help="a sweep folder, or a stage's sweeps folder (latest)")
    ap.add_argument("--json", action="store_true", help="print the states as JSON")
    ap.add_argument("--resubmit", action="store_true", help="send failed/cancelled/lost jobs again")
    ap.add_argument("--wait", action="store_true", help="with --resubmit: wait for those jobs")
    args = ap.parse_args(argv)
    try:
        sweep_dir = find_sweep(args.sweep_dir).absolute()
        if args.resubmit:
            redo = resubmit(sweep_dir, wait=args.wait)
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
