"""Time sending a 100-job steering sweep to SLURM (``wait: false``), and the one-node bring-up.

    python bench/bench_slurm_submit.py                 # submit timing, 3 repeats
    python bench/bench_slurm_submit.py --bringup       # also: down.sh, wipe state, up.sh (root)

The sweep is the real steer stage, ``layer=range(0,25) coef=1,2,3,4`` (100 jobs) with
``hydra/launcher=slurm hydra.launcher.wait=false``, submitted *held* (sbatch --hold) and
cancelled right after, so nothing runs. Reported:

- ``command_s``: the whole command, as a user waits for it (Python + Hydra start-up,
  preflight composition, the sweep, pickling 100 jobs, one sbatch of the array);
- ``submit_s``: the launcher's own part (submitit pickles + sbatch), from its log line.

Bring-up (``--bringup``): ``cold_s`` after wiping SLURM's state and config (a fresh CI
machine with the packages installed), ``warm_s`` for a restart keeping state,
``noop_s`` for up.sh on a cluster that is already up. Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

REPO = common.REPO
SLURM = REPO / "launchers" / "slurm"


def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    tic = time.perf_counter()
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)
    return time.perf_counter() - tic, p


def bringup() -> dict:
    out = {}
    subprocess.run(["bash", str(SLURM / "down.sh")], check=True, capture_output=True)
    for d in ("/var/spool/slurmctld", "/var/spool/slurmd"):
        shutil.rmtree(d, ignore_errors=True)
    Path("/etc/slurm/slurm.conf").unlink(missing_ok=True)
    out["cold_s"], p = timed(["bash", str(SLURM / "up.sh")])
    assert p.returncode == 0, p.stderr
    subprocess.run(["bash", str(SLURM / "down.sh")], check=True, capture_output=True)
    out["warm_s"], p = timed(["bash", str(SLURM / "up.sh")])
    assert p.returncode == 0, p.stderr
    out["noop_s"], p = timed(["bash", str(SLURM / "up.sh")])
    assert p.returncode == 0, p.stderr
    return out


def submit_once(experiments: Path) -> dict:
    cmd = [sys.executable, "-m", "trait_pipeline.steer", "-m", "hydra/launcher=slurm",
           "hydra.launcher.wait=false", "hydra.launcher.cpus_per_task=1",
           "+hydra.launcher.additional_parameters.hold=true",
           "layer=range(0,25)", "coef=1,2,3,4", "questions=1"]
    env = {**os.environ, "TRAIT_PIPELINE_EXPERIMENTS": str(experiments)}
    secs, p = timed(cmd, env=env, cwd=REPO, timeout=600)
    text = p.stdout + p.stderr
    m = re.search(r"submitted (\d+) jobs as SLURM array (\d+) in ([\d.]+)s", text)
    if p.returncode != 0 or not m:
        raise SystemExit(f"submission failed (rc {p.returncode}):\n{text[-3000:]}")
    subprocess.run(["scancel", m.group(2)], check=True)
    return {"jobs": int(m.group(1)), "command_s": round(secs, 2), "submit_s": float(m.group(3))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bringup", action="store_true", help="also time up.sh (cold, warm, no-op)")
    args = ap.parse_args()
    if shutil.which("sbatch") is None:
        raise SystemExit("no sbatch: run launchers/slurm/up.sh first")
    payload: dict = {"machine": common.machine()}
    if args.bringup:
        payload["bringup"] = bringup()
        common.log(f"bring-up: {payload['bringup']}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            runs.append(submit_once(Path(tmp) / f"r{i}"))
            common.log(f"submit #{i}: {runs[-1]}")
    payload["submit"] = runs
    payload["submit_median"] = {k: common.med([r[k] for r in runs]) for k in ("command_s", "submit_s")}
    path = common.write_result("slurm_submit", payload)
    common.print_table("100-job sweep to SLURM (wait: false)",
                       [(k, f"{v:.2f}") for k, v in payload["submit_median"].items()], ("what", "median s"))
    if args.bringup:
        common.print_table("one-node SLURM bring-up (launchers/slurm/up.sh)",
                           [(k, f"{v:.1f}") for k, v in payload["bringup"].items()], ("what", "s"))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
