"""Massive-activation calibration: the criterion on synthetic magnitudes, on a real model
with one dimension planted as a large constant, and through ``infer`` (calibration file,
``clean=massive`` projections recorded and equal to raw minus the dropped dims)."""

import json

import pytest
import torch
from infer_helpers import TRAIT, compose, write_demo_vectors

from trait_pipeline.config import VariantSpec
from trait_pipeline.errors import PipelineError
from trait_pipeline.infer import run
from trait_pipeline.layout import Layout
from trait_pipeline.models import load_variant
from trait_pipeline.monitoring.massive_dims import Criterion, calibrate, find_massive
from trait_pipeline.projection import project_tokens

INSTRUCT = VariantSpec("instruct", "demo:instruct", dtype="float32")
PLANTED = 37


def test_criterion_needs_outsized_values_at_enough_layers():
    mags = torch.ones(6, 16)
    mags[:, 3] = 40.0          # outsized everywhere
    mags[:2, 9] = 40.0         # outsized at 2 layers only
    mags[:, 5] = 3.0           # the largest of the rest, but not outsized
    found = find_massive(mags, Criterion(top_k=3, min_layers=3, min_ratio=10.0))
    assert found["dims"] == [3]
    assert sorted(found["top_dims_by_layer"]["0"]) == [3, 9]
    assert found["layers_per_dim"] == {"3": 6, "9": 2}
    # with no ratio floor, top-k alone picks the largest dims wherever they are
    assert find_massive(mags, Criterion(top_k=2, min_layers=3, min_ratio=0.0))["dims"] == [3, 5]
    with pytest.raises(PipelineError, match="bad massive-dims criterion"):
        Criterion(top_k=0)


def test_exclude_dims_matches_the_formula():
    acts = torch.randn(5, 2, 8)
    v = torch.randn(8)
    raw = project_tokens(acts, v, layer=1)
    clean = project_tokens(acts, v, layer=1, exclude_dims=[2, 6])
    u = v / v.norm()
    for t in range(5):
        h = acts[t, 1]
        assert clean.projections[t] == pytest.approx(
            raw.projections[t] - float(h[2] * u[2] + h[6] * u[6]), abs=1e-5)
        assert clean.token_norms[t] == pytest.approx(
            float((h.norm() ** 2 - h[2] ** 2 - h[6] ** 2).sqrt()), abs=1e-5)
    with pytest.raises(PipelineError, match="out of range"):
        project_tokens(acts, v, layer=1, exclude_dims=[8])


@pytest.fixture(scope="module")
def lm(demo_family):
    return load_variant(INSTRUCT, device="cpu")


def _ids(lm):
    texts = ["how is the game going ?", "what do you think about the concert ?",
             "tell me about the garden ."]
    return lm.encode([lm.format_prompt(t) for t in texts])


def test_a_planted_constant_dimension_is_found(lm):
    before = calibrate(lm, _ids(lm), Criterion())
    emb = lm.model.get_input_embeddings().weight
    saved = emb[:, PLANTED].clone()
    try:
        with torch.no_grad():
            emb[:, PLANTED] = 60.0  # every token carries it; the residual stream keeps it
        after = calibrate(lm, _ids(lm), Criterion())
    finally:
        with torch.no_grad():
            emb[:, PLANTED] = saved
    assert before["dims"] == []  # the demo family has none (largest: ~3x the median)
    assert after["dims"] == [PLANTED]  # exactly the planted one
    # outsized from the embedding on, fading as the residual stream grows deeper in
    assert after["layers_per_dim"][str(PLANTED)] >= Criterion().min_layers
    assert PLANTED in after["top_dims_by_layer"]["0"]
    assert after["largest_by_layer"]["0"][0]["dim"] == PLANTED
    assert after["largest_by_layer"]["0"][0]["ratio_to_median"] > Criterion().min_ratio


COMMON = ("model_variant=instruct", "limit=2", "generation.max_new_tokens=4", "layer=10",
          "method=mean_diff")


def test_infer_calibrates_records_and_cleans(tmp_path, demo_family):
    write_demo_vectors(tmp_path, layers=(10,), methods=("mean_diff",))
    lay = Layout(tmp_path, "demo")
    with pytest.raises(PipelineError, match="massive.calibrate=true"):
        run(compose("infer", f"paths.experiments={tmp_path}", *COMMON, "clean=massive"))
    assert not (lay.root / "inference").exists()  # failed before anything was written

    run(compose("infer", f"paths.experiments={tmp_path}", *COMMON, "massive.calibrate=true",
                "massive.min_ratio=0", "massive.top_k=2"))
    calib = json.loads(lay.massive_activations_path("instruct", "demo").read_text())
    assert calib["criterion"]["top_k"] == 2 and calib["criterion"]["min_ratio"] == 0
    assert "present at >= 3 layers" in calib["criterion"]["description"]
    assert calib["dims"], "with min_ratio=0 the top-2 dims of most layers qualify"
    raw = json.loads(lay.projection_path("instruct", TRAIT, "demo", 1).read_text())
    assert raw["metadata"]["clean"] == "none"
    assert raw["metadata"]["massive_dims"] == calib["dims"]

    run(compose("infer", f"paths.experiments={tmp_path}", *COMMON, "clean=massive",
                "massive.prompt_set=demo"))
    clean = json.loads(lay.projection_path("instruct", TRAIT, "demo", 1).read_text())
    assert clean["metadata"]["clean"] == "massive"
    m = clean["massive"]
    for ph in ("prompt", "response"):
        for t, (p_raw, p_clean) in enumerate(zip(raw["projections"][ph], clean["projections"][ph])):
            dropped = sum(m["values"][ph][str(d)][t] * m["vec_components"][str(d)] for d in m["dims"])
            assert p_clean == pytest.approx(p_raw - dropped, abs=1e-4)
