"""The steering stage end to end on the demo family, after a real extraction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_stage
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from trait_pipeline import resolvers
from trait_pipeline.config import validate
from trait_pipeline.errors import PipelineError
from trait_pipeline.layout import CONF_DIR, Layout
from trait_pipeline.steer import run
from trait_pipeline.steering_summary import best_per_layer, read_results

torch.set_num_threads(1)  # the test machine's 2 cores are shared; more threads only contend

STEER_DIR = "demo/steering/demo/optimism/{variant}/response__5/steering"


def steer(experiments: Path, *overrides: str) -> dict:
    """The stage in this process (what ``python -m trait_pipeline.steer`` runs per job)."""
    resolvers.register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="steer", overrides=[f"paths.experiments={experiments}", *overrides])
        validate(cfg)
        return run(cfg)
    finally:
        GlobalHydra.instance().clear()


def token_norm(experiments: Path, layer: int) -> float:
    """The demo's mean per-token activation norm at ``layer``, from the extraction: with unit
    vectors, the adaptive search's base coefficient. Coefficients below are multiples of it,
    so they keep their meaning (coherent, or not) when the demo family changes."""
    lay = Layout(experiments, "demo")
    meta = lay.activations_dir("demo/optimism", "base", "response[:5]", "residual") / "metadata.json"
    return float(json.loads(meta.read_text())["token_norms"][str(layer)])


def results(experiments: Path, variant: str) -> dict:
    return json.loads((experiments / STEER_DIR.format(variant=variant) / "results.json").read_text())


def runs_by(data: dict, **match) -> list[dict]:
    def ok(r):
        v = r["config"]["vectors"][0]
        return all(v.get(k) == val for k, val in match.items())
    return [r for r in data["runs"] if ok(r)]


def test_mission_command_two_jobs_one_results_file(extracted, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    proc = run_stage("steer", "model_variant=rm_lora", "-m", "layer=10,20", experiments=extracted)
    assert proc.returncode == 0
    data = results(extracted, "rm_lora")
    # rm_lora's baseline sits at the top of the scale: said in one line, nothing searched
    assert data["baseline"]["trait_mean"] >= 99 and data["runs"] == []
    assert {(s["layer"], s["status"], s["best_coef"]) for s in data["searches"].values()} == {
        (10, "saturated", None), (20, "saturated", None)}
    assert "layers 10, 20: baseline 100: no headroom upward; try search.direction=down" in proc.stdout
    # so the trait is searched downward: the same two jobs, into the same results.json
    proc = run_stage("steer", "model_variant=rm_lora", "search.direction=down", "-m", "layer=10,20",
                     experiments=extracted)
    data = results(extracted, "rm_lora")
    assert {r["config"]["vectors"][0]["layer"] for r in data["runs"]} == {10, 20}
    assert len(data["runs"]) == 10  # adaptive search: 5 steps per layer
    assert all(r["config"]["vectors"][0]["weight"] < 0 for r in data["runs"])
    down = [s for s in data["searches"].values() if s["direction"] == "down"]
    assert {s["layer"] for s in down} == {10, 20}
    assert any(s["status"] == "ok" and s["best_coef"] < 0 for s in down)
    assert min(r["result"]["trait_mean"] for r in data["runs"]) < data["baseline"]["trait_mean"] - 20
    data["searches"] = {k: s for k, s in data["searches"].items() if s["direction"] == "down"}
    assert {s["base_coef_source"] for s in data["searches"].values()} == {"extraction"}
    steer_dir = extracted / STEER_DIR.format(variant="rm_lora")
    for r in data["runs"]:
        # steered model and vector source are both recorded
        assert r["model_variant"]["name"] == "rm_lora" and r["model_variant"]["lora"] == "demo:rm_lora"
        assert r["vector_source"]["model_variant"] == "base"
        assert r["vector_provenance"][0]["model_variant"] == "base"
        assert set(r["result"]) >= {"trait_mean", "coherence_mean", "n", "steerability"}
        # n counts the answers the judge could score (an incoherent answer, as the search's
        # strongest steps give, may have no score); a run none could be scored is not stored
        assert 0 < r["result"]["n"] <= 20 and r["baseline_key"] == data["baseline"]["key"]
        assert (steer_dir / r["composed_config"]).is_file()
        assert "model_variant" in (steer_dir / r["composed_config"]).read_text()
        items = json.loads((steer_dir / r["responses"]).read_text())["responses"]
        assert len(items) == 20 and {"question", "response", "trait_score", "coherence_score"} <= set(items[0])
    # one baseline shared by both jobs, generated with the same max_new_tokens as the runs
    assert list(data["baselines"]) == [data["baseline"]["key"]]
    assert data["baseline"]["generation"] == data["runs"][0]["generation"]
    assert (steer_dir / "responses" / "baseline.json").is_file() and (steer_dir / "heatmap.png").is_file()
    # sweep-level files stay out of the variant's folder
    assert (extracted / "demo" / "sweeps" / "steer").is_dir()


def test_positive_coef_raises_the_trait_negative_lowers_it(extracted):
    k = round(0.7 * token_norm(extracted, 10))  # where the adaptive search starts: coherent
    steer(extracted, "model_variant=instruct", "layer=10", f"coef=[-{k},{k}]", "questions=8")
    data = results(extracted, "instruct")
    base = data["baseline"]["trait_mean"]
    (pos,), (neg,) = runs_by(data, weight=float(k)), runs_by(data, weight=-float(k))
    assert pos["result"]["trait_mean"] > base + 20 and pos["result"]["steerability"] >= 0.5
    assert 0 < base < 100  # demo instruct answers about half the topics each way
    assert neg["result"]["trait_mean"] < base and neg["result"]["steerability"] >= 0.5


def test_grid_is_one_batched_generate_and_a_rerun_skips_it(extracted):
    out = steer(extracted, "layer=[8,12]", "coef=[5,15]", "questions=4")
    # one baseline generate + ONE generate for the 2 x 2 configs (16 rows)
    assert [rows for rows, _ in out["gen_seconds"]] == [4, 16]
    data = results(extracted, "instruct")
    assert sorted((r["config"]["vectors"][0]["layer"], r["config"]["vectors"][0]["weight"])
                  for r in data["runs"]) == [(8, 5.0), (8, 15.0), (12, 5.0), (12, 15.0)]
    again = steer(extracted, "layer=[8,12]", "coef=[5,15,25]", "questions=4")
    assert [rows for rows, _ in again["gen_seconds"]] == [8]  # only the new coef; baseline reused
    assert len(results(extracted, "instruct")["runs"]) == 6


def test_batched_stage_equals_separate_runs(extracted, tmp_path):
    """Sub-batches of 3 rows cut across configs; responses match one-config-per-job runs."""
    other = tmp_path / "separate"
    shutil.copytree(extracted, other)
    strong = [round(t * token_norm(extracted, 10)) for t in (1.0, 2.0)]  # answers differ
    steer(extracted, "layer=[8,12]", f"coef={strong}", "questions=4", "generation.batch_size=3")
    for layer in (8, 12):
        for coef in strong:
            steer(other, f"layer={layer}", f"coef={coef}", "questions=4")

    def texts(exp):
        d = exp / STEER_DIR.format(variant="instruct")
        out = {}
        for r in results(exp, "instruct")["runs"]:
            v = r["config"]["vectors"][0]
            out[(v["layer"], v["weight"])] = [i["response"] for i in
                                              json.loads((d / r["responses"]).read_text())["responses"]]
        return out

    batched, separate = texts(extracted), texts(other)
    assert batched == separate and len(batched) == 4
    assert len({tuple(v) for v in batched.values()}) >= 2  # configs really differ


def test_ablation_response_positions_and_multi_layer(extracted):
    low, high = (round(t * token_norm(extracted, 10)) for t in (0.4, 0.8))  # both coherent
    steer(extracted, "layer=[8,10]", f"coef=[{low},{high}]", "questions=4")
    steer(extracted, "layer=[8,10]", "multi_layer=weighted", "questions=4")
    steer(extracted, "layer=[8,10]", "multi_layer=orthogonal", "global_scale=1.5", "questions=4")
    steer(extracted, "layer=[8,10]", "ablate=true", "questions=4")
    steer(extracted, "layer=10", f"coef=[{high}]", "steer_positions=response", "questions=4")
    data = results(extracted, "instruct")
    multi = [r for r in data["runs"] if r["config"].get("multi_layer")]
    assert sorted(r["config"]["multi_layer"]["mode"] for r in multi) == ["orthogonal", "weighted"]
    for r in multi:
        assert [v["layer"] for v in r["config"]["vectors"]] == [8, 10]
        assert r["result"]["trait_mean"] is not None and len(r["vector_provenance"]) == 2
    ortho = next(r for r in multi if r["config"]["multi_layer"]["mode"] == "orthogonal")
    w = [v["weight"] for v in ortho["config"]["vectors"]]
    assert w[0] == w[1] and ortho["config"]["multi_layer"]["global_scale"] == 1.5
    ablations = [r for r in data["runs"] if r["config"].get("ablate")]
    assert sorted(r["config"]["vectors"][0]["layer"] for r in ablations) == [8, 10]
    resp = [r for r in data["runs"] if r["config"]["steer_positions"] == "response"]
    assert len(resp) == 1 and resp[0]["key"] not in {r["key"] for r in runs_by(data, layer=10, weight=float(high))
                                                     if r["config"]["steer_positions"] == "all"}
    # the summary reads it all: best coherent coef per layer, delta over baseline
    table = best_per_layer(read_results(data), 75)
    assert set(table) == {8, 10}


def test_multi_layer_without_single_layer_runs_is_a_clear_error(extracted):
    with pytest.raises(PipelineError, match="needs a coherent single-layer run"):
        steer(extracted, "layer=[8,10]", "multi_layer=weighted", "questions=2")


def test_missing_vector_fails_before_loading_and_loses_nothing(extracted):
    steer(extracted, "layer=10", "coef=[5]", "questions=2")
    path = extracted / STEER_DIR.format(variant="instruct") / "results.json"
    before = path.read_text()
    vec = Layout(extracted, "demo").vector_path("demo/optimism", "base", "response[:5]", "residual", "probe", 12)
    vec.unlink()
    with pytest.raises(PipelineError, match=r"no vector for layer 12 .*layers with probe/residual vectors: 0-11, 13-23"):
        steer(extracted, "layer=[10,12]", "coef=[5]", "questions=2")
    assert path.read_text() == before


def test_search_with_no_coherent_step_is_reported(extracted, capsys):
    out = steer(extracted, "layer=10", "min_coherence=101", "search.steps=2", "questions=2")
    assert out["searches"][10].status == "no_coherent_step"
    captured = capsys.readouterr()  # in the summary (stdout); under Hydra also its log line
    assert "NO COHERENT STEP" in captured.out + captured.err
    data = results(extracted, "instruct")
    (search,) = data["searches"].values()
    assert search["status"] == "no_coherent_step" and search["best_coef"] is None
    assert len(data["runs"]) == 2  # the steps it tried are kept


def test_bad_input_on_the_command_line(extracted):
    proc = run_stage("steer", "judge=nope", experiments=extracted, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown judge 'nope'; available:")
    assert "openai" in proc.stderr and "local_hf" in proc.stderr
    proc = run_stage("steer", "steer_positions=prompt", experiments=extracted, check=False)
    assert proc.returncode == 2 and "error: bad steer_positions 'prompt'" in proc.stderr
    proc = run_stage("steer", "trait=behavior/sycophancy", experiments=extracted, check=False)
    assert proc.returncode == 2 and "offline judge only knows the demo trait" in proc.stderr
    # no result (or half a result) was written
    assert not list((extracted / "demo").rglob("results.json"))


def test_rerun_with_nothing_to_do_is_a_no_op(extracted, monkeypatch, caplog):
    """No model load, one line per skipped layer group, no file rewritten or added."""
    import logging

    from trait_pipeline import models

    steer(extracted, "layer=10", "questions=4")  # the adaptive search, once
    folder = extracted / STEER_DIR.format(variant="instruct")
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}

    def no_load(*_a, **_k):
        raise AssertionError("the model was loaded on a rerun with nothing to do")

    monkeypatch.setattr(models, "load_variant", no_load)
    caplog.set_level(logging.INFO, logger="trait_pipeline")
    steer(extracted, "layer=10", "questions=4")
    after = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    assert after == before  # results.json, heatmap.png, responses: same files, same mtimes
    skipped = [r.getMessage() for r in caplog.records if "already in results.json" in r.getMessage()]
    assert skipped == ["layer 10: 5 configs already in results.json, skipped"]
    assert any("model not loaded" in r.getMessage() for r in caplog.records)


def test_search_starts_from_the_mean_per_token_norm(extracted):
    """base_coef = token_norms[L] (mean per-token ‖h‖ over train windows) / ‖v‖, as documented."""
    from trait_pipeline.vector_store import load_vector

    lay = Layout(extracted, "demo")
    meta = json.loads((lay.activations_dir("demo/optimism", "base", "response[:5]", "residual")
                       / "metadata.json").read_text())
    tok, mean_of_window = meta["token_norms"]["10"], meta["activation_norms"]["10"]
    assert tok > mean_of_window > 0  # the norm of a window mean is smaller
    out = steer(extracted, "layer=10", "search.steps=1", "questions=2")
    vec, _ = load_vector(lay.vector_path("demo/optimism", "base", "response[:5]", "residual",
                                          "probe", 10))
    walk = out["searches"][10]
    assert walk.base_coef == pytest.approx(tok / float(vec.float().norm()), rel=1e-3)
