"""Extraction -> steering -> inference through the real stage entry points on Gemma-2, Qwen2
and GPT-2 stand-ins (bf16 / fp16 / fp32 on CPU), the inference footprint estimate against the
real size, ``capture_layers``, ``save_raw=false``, the disk refusal and ``device=cuda``."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from conftest import run_stage
from infer_helpers import compose
from judge_server import JudgeServer
from safetensors import safe_open

from trait_pipeline.archs.standins import build_lora, build_standin
from trait_pipeline.errors import PipelineError
from trait_pipeline.layout import Layout

pytestmark = pytest.mark.slow
TRAIT = "demo/optimism"
CASES = {"gemma2": "bfloat16", "qwen2": "float16", "gpt2": "float32"}
QUICK_EXTRACT = ("trait=demo/optimism", "max_pairs=6", "generation.max_new_tokens=6",
                 "method=[mean_diff]", "steps=[generate,activations,vectors,evaluate,logit_lens]")
QUICK_INFER = ("trait=demo/optimism", "prompt_set=demo", "limit=3", "generation.max_new_tokens=6",
               "layer=1", "method=mean_diff")


def variant_overrides(root, arch: str) -> list[str]:
    path = build_standin(arch, root)
    lora = build_lora(path, root / f"{arch}-lora", arch)
    return [f"variants.base.model={path}", f"variants.instruct.model={path}",
            f"variants.rm_lora.model={path}", f"variants.rm_lora.lora={lora}",
            f"dtype={CASES[arch]}", "device=cpu"]


def _dir_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.safetensors"))


def _estimate(stdout: str) -> float:
    m = re.search(r"disk: raw activations of \d+ prompts ≈ ([\d.]+) (B|kB|MB|GB)", stdout)
    assert m, stdout[-2000:]
    return float(m.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(2)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("standins")


@pytest.mark.parametrize("arch", sorted(CASES))
@pytest.mark.heavy  # three stage pipelines per architecture (~1.5 min each on 2 cores)
def test_extract_steer_infer_on_a_standin(arch, models, tmp_path):
    exp = tmp_path / "experiments"
    ov = variant_overrides(models, arch)
    out = run_stage("extract", *QUICK_EXTRACT, *ov, experiments=exp)
    assert "disk: activations of" in out.stdout
    lay = Layout(exp, "demo")
    vec_dir = lay.extraction_dir(TRAIT, "base") / "vectors"
    files = sorted(vec_dir.rglob("layer*.safetensors"))
    assert len(files) == 3  # one per layer of the stand-in
    for f in files:  # vectors are float32 whatever the model's dtype
        with safe_open(str(f), framework="pt") as h:
            assert all(h.get_tensor(k).dtype == torch.float32 for k in h.keys())  # noqa: SIM118
    # a random-weight stand-in answers in random demo words, where the offline lexicon judge
    # often finds nothing to score: an OpenAI-compatible judge on 127.0.0.1 scores any text
    with JudgeServer() as judge:
        run_stage("steer", "trait=demo/optimism", "layer=1", "coef=[4]", "method=mean_diff",
                  "questions=2", "generation.max_new_tokens=6", *ov,
                  *judge.judge_overrides(tmp_path / "judge-cache"), experiments=exp,
                  env={"OPENAI_API_KEY": "sk-test-standin"})
        assert judge.requests  # the steering answers really went to the judge
    results = list((exp / "demo" / "steering").rglob("results.json"))
    assert results and json.loads(results[0].read_text())["runs"]
    out = run_stage("infer", *QUICK_INFER, *ov, experiments=exp)
    raw_dir = lay.inference_dir("instruct") / "raw" / "demo"
    raws = sorted(raw_dir.glob("*.safetensors"))
    assert len(raws) == 3
    with safe_open(str(raws[0]), framework="pt") as h:
        assert h.get_tensor("response.residual").dtype == getattr(torch, CASES[arch])
        assert h.get_tensor("response.residual").shape[1:] == (3, 32)
    # the footprint printed before the first write, within 10 % of what was written
    est, real = _estimate(out.stdout), _dir_bytes(raw_dir)
    assert abs(est - real) <= 0.1 * real, (est, real)
    for pid in (1, 2, 3):
        proj = json.loads(lay.projection_path("instruct", TRAIT, "demo", pid).read_text())
        vals = proj["projections"]["response"]
        assert vals and all(isinstance(v, float) and math.isfinite(v) for v in vals)


@pytest.fixture(scope="module")
def qwen_extracted(models, tmp_path_factory):
    exp = tmp_path_factory.mktemp("qwen") / "experiments"
    run_stage("extract", *QUICK_EXTRACT, *variant_overrides(models, "qwen2"), experiments=exp)
    return exp


def _infer(exp, models, *extra, arch="qwen2"):
    from trait_pipeline.infer import run

    return run(compose("infer", f"paths.experiments={exp}", *QUICK_INFER,
                       *variant_overrides(models, arch), *extra))


def _copy(src, tmp_path):
    import shutil

    dst = tmp_path / "experiments"
    shutil.copytree(src, dst)
    return dst


def test_capture_layers_keeps_those_layers_and_the_vectors(qwen_extracted, models, capsys, tmp_path):
    exp = _copy(qwen_extracted, tmp_path)
    _infer(exp, models, "capture_layers=[0]")
    lay = Layout(exp, "demo")
    raw = lay.raw_path("instruct", "demo", 1)
    with safe_open(str(raw), framework="pt") as h:
        assert h.get_tensor("response.residual").shape[1] == 2  # layer 0 + the vector's layer 1
        assert json.loads(h.metadata()["layers"]) == [0, 1]
    proj = json.loads(lay.projection_path("instruct", TRAIT, "demo", 1).read_text())
    assert proj["metadata"]["activation_norm_layers"] == [0, 1]
    # the same projections as a capture of every layer
    out = capsys.readouterr().out
    est, real = _estimate(out), _dir_bytes(raw.parent)
    assert abs(est - real) <= 0.1 * real
    _infer(exp, models, "force=true")
    full = json.loads(lay.projection_path("instruct", TRAIT, "demo", 1).read_text())
    assert full["metadata"]["activation_norm_layers"] == [0, 1, 2]
    assert full["projections"] == proj["projections"]
    with pytest.raises(PipelineError, match="capture_layers: layer 7 out of range"):
        _infer(exp, models, "capture_layers=[7]")


def test_save_raw_false_keeps_only_responses_and_projections(qwen_extracted, models, tmp_path):
    import shutil

    exp = _copy(qwen_extracted, tmp_path)
    with_raw = _infer(exp, models)
    lay = Layout(exp, "demo")
    keep = {pid: json.loads(lay.projection_path("instruct", TRAIT, "demo", pid).read_text())
            for pid in (1, 2, 3)}
    shutil.rmtree(lay.inference_dir("instruct"))
    without = _infer(exp, models, "save_raw=false")
    assert not (lay.inference_dir("instruct") / "raw").exists()
    assert without == with_raw
    for pid in (1, 2, 3):
        rec = json.loads(lay.projection_path("instruct", TRAIT, "demo", pid).read_text())
        assert rec["projections"] == keep[pid]["projections"] and rec["metadata"]["raw"] is None
        resp = json.loads(lay.inference_response_path("instruct", "demo", pid).read_text())
        assert resp["metadata"]["raw"] is None
    # a rerun keeps what is there (nothing to capture again)
    mtime = lay.projection_path("instruct", TRAIT, "demo", 1).stat().st_mtime_ns
    _infer(exp, models, "save_raw=false")
    assert lay.projection_path("instruct", TRAIT, "demo", 1).stat().st_mtime_ns == mtime


def test_a_footprint_larger_than_the_free_space_is_refused_in_one_line(qwen_extracted, models,
                                                                       tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    exp = _copy(qwen_extracted, tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(PipelineError) as err:
        _infer(exp, models)
    msg = str(err.value)
    assert "\n" not in msg and "raw activations of 3 prompts need about" in msg
    assert "disk_check=false" in msg and "save_raw=false" in msg
    lay = Layout(exp, "demo")
    assert not (lay.inference_dir("instruct") / "raw").exists()  # nothing half-written
    _infer(exp, models, "disk_check=false")  # told otherwise: it writes
    assert len(list((lay.inference_dir("instruct") / "raw" / "demo").glob("*.safetensors"))) == 3


def test_the_demo_footprint_estimate_is_within_ten_percent(tmp_path, capsys, demo_family):
    from infer_helpers import write_demo_vectors

    from trait_pipeline.infer import run

    root = tmp_path / "experiments"
    write_demo_vectors(root, layers=(10,), methods=("mean_diff",))
    run(compose("infer", f"paths.experiments={root}", "limit=3", "generation.max_new_tokens=4",
                "method=mean_diff"))
    raw_dir = Layout(root, "demo").inference_dir("instruct") / "raw" / "demo"
    est, real = _estimate(capsys.readouterr().out), _dir_bytes(raw_dir)
    assert abs(est - real) <= 0.1 * real, (est, real)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_fails_in_one_line(models, tmp_path):
    exp = tmp_path / "experiments"
    proc = run_stage("extract", *QUICK_EXTRACT, *variant_overrides(models, "gpt2"), "device=cuda",
                     experiments=exp, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: device=cuda but CUDA is not available")
    assert not list(exp.rglob("*.safetensors"))
