"""Wall time of ``--cfg job`` and ``--help`` for each stage entry point (goal ≤ 1 s).

    python bench/bench_cli.py                 # median of 7 runs each, after one warm-up
    python bench/bench_cli.py --repeats 15 --importtime

Each command runs as a user types it (``python -m trait_pipeline.steer --cfg job``) in a
fresh interpreter. Two floors are timed in the same rounds: ``python -c pass`` (the
interpreter) and ``python -c "import hydra, omegaconf"`` (what any Hydra app pays), so
the part that is ours shows. ``--importtime`` also prints each command's five slowest
imports (``python -X importtime``), which is how a slow entry point is diagnosed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

STAGES = ("extract", "steer", "infer")
GOAL_S = 1.0


def commands() -> dict[str, list[str]]:
    py = sys.executable
    cmds = {"python -c pass": [py, "-c", "pass"],
            "import hydra, omegaconf": [py, "-c", "import hydra, omegaconf"]}
    for s in STAGES:
        cmds[f"{s} --cfg job"] = [py, "-m", f"trait_pipeline.{s}", "--cfg", "job"]
        cmds[f"{s} --help"] = [py, "-m", f"trait_pipeline.{s}", "--help"]
    return cmds


def _runner(cmd: list[str]):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}

    def run():
        proc = subprocess.run(cmd, cwd=common.REPO, env=env, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} exited {proc.returncode}: {proc.stderr[-500:]}")

    return run


def slowest_imports(cmd: list[str], top: int = 5) -> list[tuple[str, float]]:
    """The ``top`` imports with the largest cumulative time (s), from ``-X importtime``."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=common.REPO,
                          capture_output=True, text=True, check=False)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(2)) == 1:  # top-level imports only
            rows.append((m.group(3), int(m.group(1)) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--importtime", action="store_true")
    args = p.parse_args(argv)
    cmds = commands()
    common.log(f"cli: {len(cmds)} commands x {args.repeats} repeats")
    times = common.interleaved({k: _runner(c) for k, c in cmds.items()},
                               repeats=args.repeats, warmup=args.warmup)
    res = common.summary(times, "import hydra, omegaconf")
    rows = [(k, f"{v['median_s']:.2f}", f"{v['min_s']:.2f}",
             "-" if k in ("python -c pass", "import hydra, omegaconf")
             else ("yes" if v["median_s"] <= GOAL_S else "NO"))
            for k, v in res.items()]
    common.print_table("entry points (fresh interpreter each run)", rows,
                       ("command", "median s", "min s", f"<= {GOAL_S:g} s"))
    imports = {}
    if args.importtime:
        for k, c in cmds.items():
            if "trait_pipeline" in " ".join(c):
                imports[k] = slowest_imports(c)
                print(f"\n{k}: slowest imports " + ", ".join(f"{n} {t:.2f}s" for n, t in imports[k]))
    path = common.write_result("cli", {"results": res, "repeats": args.repeats, "goal_s": GOAL_S,
                                       "slowest_imports": imports})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
