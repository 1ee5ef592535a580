"""``--cfg job|hydra|all``, ``--resolve``, ``--info`` and ``--help`` on every stage: no traceback,
exit 0, and torch never imported (checked inside the process that ran the flag)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = """
import runpy, sys
sys.argv = ["x", *{args!r}]
code = 0
try:
    runpy.run_module("trait_pipeline.{stage}", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
print("TORCH_IMPORTED" if "torch" in sys.modules else "NO_TORCH", file=sys.stderr)
sys.exit(code)
"""
# (--cfg job is in the tests below; each process costs ~1 s of imports, so keep the list short)
FLAGS = [["--cfg", "hydra"], ["--cfg", "all"], ["--resolve"], ["--info", "defaults", "experiment=rm_syco"],
         ["--help"]]


def run(stage: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN.format(stage=stage, args=args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("stage", ["extract", "steer", "infer", "compare"])
def test_every_flag_on_every_stage(stage):
    for args in FLAGS:
        out = run(stage, args)
        assert out.returncode == 0, (args, out.stderr[-1500:])
        assert "Traceback" not in out.stderr + out.stdout, (args, out.stderr[-1500:])
        assert out.stderr.strip().endswith("NO_TORCH"), (args, "torch was imported")
        assert out.stdout.strip(), args


def test_cfg_hydra_resolves_the_run_dir_from_the_job_config():
    out = run("steer", ["--cfg", "hydra", "model_variant=rm_lora"])
    assert out.returncode == 0, out.stderr
    assert "InterpolationKeyError" not in out.stderr
    run_dir = next(line for line in out.stdout.splitlines() if line.strip().startswith("dir:"))
    assert "/steering/demo/optimism/rm_lora/response__5/steering/runs/" in run_dir


def test_cfg_job_is_resolved_and_unset_values_print_as_missing():
    out = run("steer", ["--cfg", "job", "model_variant=rm_lora"])
    assert "lora: demo:rm_lora" in out.stdout and "${" not in out.stdout
    out = run("compare", ["--cfg", "job"])  # model_variants has no default
    assert out.returncode == 0 and "model_variants: ???" in out.stdout
    assert "note: model_variants is not set" in out.stderr


def test_bad_names_with_the_flags_are_one_line():
    for args in (["--cfg", "job", "experiment=nope"], ["--info", "experiment=nope"],
                 ["--help", "experiment=nope"], ["--cfg", "all", "experiment=gemma-2-2b",
                                                    "model_variant=rm_lora"]):
        out = run("steer", args)
        assert out.returncode == 2, (args, out.stderr)
        lines = [x for x in out.stderr.splitlines() if x != "NO_TORCH"]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, out.stderr)
