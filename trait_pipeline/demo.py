"""``python -m trait_pipeline.demo``: the whole pipeline on the embedded demo experiment.

Runs the real entry points, one after the other, exactly as a user would type them:

1. ``extract``                      vectors for demo/optimism from the base variant
2. ``steer``                        adaptive coefficient search on instruct, layer 10
   ``steer model_variant=rm_lora -m layer=10,20``   the mission command (rm_lora's baseline is
                                   at the top of the scale: it says so, no best coefficient)
   ``steer model_variant=rm_lora search.direction=down layer=10``   rm_lora steered down
3. ``infer -m model_variant=instruct,rm_lora``      per-token monitoring of both variants
4. ``infer model_variant=rm_lora replay=instruct``  the same tokens through rm_lora
5. ``compare model_variants=[instruct,rm_lora]`` (own answers, then ``replay=true``: same tokens)

Extra arguments are passed to every stage (e.g. ``paths.experiments=/tmp/x``). Everything
runs offline on CPU; the demo model family is built on first use (under 2 min on 2 cores).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

STEPS: list[tuple[str, list[str]]] = [
    ("extract", []),
    ("steer", []),
    ("steer", ["model_variant=rm_lora", "-m", "layer=10,20"]),
    ("steer", ["model_variant=rm_lora", "search.direction=down", "layer=10"]),
    ("infer", ["-m", "model_variant=instruct,rm_lora"]),
    ("infer", ["model_variant=rm_lora", "replay=instruct"]),
    ("compare", ["model_variants=[instruct,rm_lora]"]),
    ("compare", ["model_variants=[instruct,rm_lora]", "replay=true"]),
]


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in extra):
        print("usage: trait-pipeline demo [overrides passed to every stage]\n")
        print(__doc__.strip().split("\n", 1)[1].strip())
        return 0
    t0 = time.time()
    for stage, args in STEPS:
        cmd = [sys.executable, "-m", f"trait_pipeline.{stage}", *args, *extra]
        print(f"\n$ python -m trait_pipeline.{stage} {shlex.join(args + extra)}", flush=True)
        started = time.time()
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"demo: step `{stage}` failed with exit status {rc}", file=sys.stderr)
            return rc
        print(f"  ({stage}: {time.time() - started:.0f}s)", flush=True)
    print(f"\nDemo finished in {time.time() - t0:.0f}s. Outputs: experiments/demo/ "
          "(or your paths.experiments). Browse them with: python -m trait_pipeline.serve")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
