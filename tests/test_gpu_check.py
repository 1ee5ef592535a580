"""bench/gpu_check.sh: its CPU smoke run (tiny model, no GPU) writes every part's figures."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import REPO


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script sets its own
    return subprocess.run(["bash", "bench/gpu_check.sh", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
@pytest.mark.heavy  # the demo pipeline twice (CPU as 'GPU', then CPU)
def test_cpu_smoke_writes_the_json_of_every_part(tmp_path):
    out = tmp_path / "results"
    proc = _run("--cpu-smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["cpu_smoke"] is True and summary["environment"]["torch"]
    bench, demo = summary["parts"]["bench"], summary["parts"]["demo"]
    assert bench["status"] == "ok", bench
    assert bench["capture"]["ratio_capture_over_bare"] > 0
    assert bench["steering"]["ratio_steered_over_unsteered"] > 0
    assert bench["sweep"]["rows"] == 8 and bench["sweep"]["speedup_loop_over_batched"] > 0
    assert demo["status"] == "ok", demo
    comp = demo["comparison"]
    # the same seed on the same device: identical everything
    assert comp["vectors"] and comp["summary"]["min_vector_cosine"] > 0.9999
    assert comp["steering"] and all(s["equal"] for s in comp["steering"])
    assert comp["inference"] and all(r["equal"] for r in comp["inference"])
    assert comp["summary"]["max_projection_rel_diff"] == 0
    extras = summary["parts"]["extras"]
    assert extras["status"] == "ok", extras
    # on one device in fp32, the batched sweep is the per-config runs exactly
    fp32 = extras["sweep_agreement"][0]
    assert fp32["dtype"] == "torch.float32" and fp32["rows_all_tokens_equal"] == "8/8"
    assert extras["oom_halving"]["rows_equal_to_a_run_at_the_final_batch"] == "8/8"
    assert extras["steering_interleaved"]["median_ratio_steered_over_plain"] > 0


def test_a_bad_argument_is_one_line(tmp_path):
    proc = _run("--bogus")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: unknown argument --bogus (expected --out DIR or --cpu-smoke)"]
