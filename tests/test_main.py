"""``trait-pipeline <command>`` / ``python -m trait_pipeline <command>``: the one front door."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from trait_pipeline.__main__ import COMMANDS, main

REPO = Path(__file__).resolve().parent.parent


def test_help_lists_every_stage_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("extract", "steer", "infer", "compare", "migrate", "serve", "status", "demo"):
        assert name in COMMANDS
        line = next(x for x in out.splitlines() if x.startswith(f"  {name} "))
        assert COMMANDS[name].summary in line


def test_unknown_command_is_one_line_and_exit_2(capsys):
    assert main(["nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown command 'nope'; expected one of: extract, steer")
    assert "\n" not in err


def test_every_command_module_exists():
    import importlib.util

    for cmd in COMMANDS.values():
        assert importlib.util.find_spec(cmd.module) is not None, cmd.module


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_stage_through_the_front_door_is_the_stage(tmp_path):
    cfgs = []
    for argv in (["trait_pipeline", "steer"], ["trait_pipeline.steer"]):
        r = _run([*argv, "model_variant=rm_lora", "--cfg", "job"], tmp_path)
        assert r.returncode == 0, (argv, r.stderr)
        cfgs.append(OmegaConf.create(r.stdout))
    assert cfgs[0] == cfgs[1] and cfgs[0].model_variant.name == "rm_lora"
    # -m anywhere, also before the command: the sweep is expanded and checked before it runs
    for argv in (["trait_pipeline", "steer", "model_variant=instruct,nope", "-m", "layer=10,20"],
                 ["trait_pipeline", "-m", "steer", "model_variant=instruct,nope", "layer=10,20"],
                 ["trait_pipeline.steer", "model_variant=instruct,nope", "-m", "layer=10,20"]):
        r = _run([*argv, f"paths.experiments={tmp_path / 'x'}"], tmp_path)
        assert r.returncode == 2 and r.stderr.strip() == (
            "error: model_variant 'nope' is not defined by experiment 'demo'; "
            "it defines: base, instruct, rm_lora"), (argv, r.stderr)
    assert not (tmp_path / "x").exists()
