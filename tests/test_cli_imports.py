"""The stage entry points stay light: importing one must not import torch.

``--help`` and ``--cfg job`` run the module's top level, so a module-level ``import torch``
(or of a module that imports it) costs 1.5-3 s on every such command (goal: ≤ 1 s; timed
in ``bench/bench_cli.py``, never here). This checks the cause, not the time.
"""

import subprocess
import sys

import pytest

CHECK = "import sys, trait_pipeline.{stage}; print('torch' in sys.modules)"


@pytest.mark.parametrize("stage", ["extract", "steer", "infer", "compare"])
def test_stage_module_does_not_import_torch(stage):
    out = subprocess.run([sys.executable, "-c", CHECK.format(stage=stage)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False", f"trait_pipeline.{stage} imports torch at import time"
