"""Wall time of the demo family's build, on a quiet machine and beside busy loops (goal ≤ 120 s quiet).

    python bench/bench_demo_build.py                 # quiet: nothing else should run
    python bench/bench_demo_build.py --busy 2        # two busy-loop processes, one per core

Each run builds the current recipe from scratch into a temp cache (``ensure_demo_family``,
the code path of a first run) and removes it after. ``--busy N`` starts N processes that spin
in ``while True: pass`` for the whole build (a ``stress``-like load: with 2 cores and
``--busy 2`` the build gets about a third of a core), so the figure shows what contention
costs. Writes ``bench/results/demo_build_busy{N}.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

GOAL_S = 120.0


def _spin() -> None:
    while True:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes beside the build")
    args = ap.parse_args()

    from trait_pipeline import demo_family

    spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    cache = Path(tempfile.mkdtemp(prefix="bench-demo-build-"))
    try:
        t0 = time.perf_counter()
        fam = demo_family.ensure_demo_family(cache, progress=True)
        seconds = time.perf_counter() - t0
        info = json.loads((fam.root / "recipe.json").read_text())
    finally:
        for p in spinners:
            p.terminate()
        shutil.rmtree(cache, ignore_errors=True)
    recipe = info["recipe"]
    check = info["base_sentiment_check"]   # the base steps it took, extra ones included
    steps = (check["steps"] + check.get("grown", {}).get("steps", 0) + recipe["instruct_steps"]
             + recipe["lora_steps"])
    payload = {"busy_processes": args.busy, "seconds": round(seconds, 1),
               "build_seconds": info["build_seconds"], "recipe_hash": info["recipe_hash"],
               "steps": steps, "goal_s": GOAL_S}
    path = common.write_result(f"demo_build_busy{args.busy}", payload)
    verdict = "" if args.busy else (
        f" ({'meets' if seconds <= GOAL_S else 'misses'} the {GOAL_S:.0f} s goal for a quiet machine)")
    print(f"demo family build, {args.busy} busy loop(s): {seconds:.0f} s for {steps} steps"
          f"{verdict}  -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
