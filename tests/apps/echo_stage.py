"""A trivial stage for the launcher tests: writes one JSON per job under the job's output_dir.

Composed from conf/steer.yaml like the real stage, so sweeps over model_variant put each job
under its own variant's folder. ``layer=99`` raises (a job that fails); ``+sleep_s=N`` sleeps.
"""

import os
import time
from pathlib import Path

from trait_pipeline.cli import stage_main
from trait_pipeline.jsonio import write_json


def run(cfg):
    if int(cfg.layer) == 99:
        raise ValueError("layer 99 is out of range for this test")
    time.sleep(float(cfg.get("sleep_s", 0)))
    out = Path(cfg.output_dir) / f"echo_L{cfg.layer}.json"
    write_json(out, {"variant": str(cfg.model_variant.name), "layer": int(cfg.layer),
                     "pid": os.getpid(), "slurm_job": os.environ.get("SLURM_JOB_ID")})
    return str(out)


main = stage_main("steer")(run)

if __name__ == "__main__":
    main()
