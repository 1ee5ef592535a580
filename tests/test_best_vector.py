"""Best-vector selection: steering evidence first (coherence-gated), else effect size,
never on one scale; manual picks; one-line errors."""

import pytest
import torch

from trait_pipeline.best_vector import select_vector
from trait_pipeline.errors import PipelineError
from trait_pipeline.jsonio import write_json
from trait_pipeline.layout import Layout
from trait_pipeline.vector_store import save_vector

TRAIT, POS = "demo/optimism", "response[:5]"


def _vec(lay, method, layer, position=POS, component="residual"):
    save_vector(lay.vector_path(TRAIT, "base", position, component, method, layer), torch.ones(4),
                {"model": "demo:base", "layer": layer, "method": method, "position": position})


def _evaluation(lay, rows):
    write_json(lay.evaluation_path("base"), {"results": [
        {"trait": TRAIT, "method": m, "layer": la, "component": "residual", "position": POS,
         "val_effect_size": d, "val_accuracy": 0.9} for m, la, d in rows]})


def _steering(lay, variant, runs, baseline=40.0):
    write_json(lay.results_path(TRAIT, variant, POS, "steering"), {
        "schema_version": 1, "baseline": {"trait_mean": baseline},
        "runs": [{"config": {"vectors": [{"layer": la, "method": m, "weight": c,
                                          "component": "residual", "position": POS}]},
                  "result": {"trait_mean": t, "coherence_mean": coh}} for m, la, c, t, coh in runs]})


@pytest.fixture
def lay(tmp_path):
    lay = Layout(tmp_path, "demo")
    for m in ("mean_diff", "probe", "random_baseline"):
        for la in (4, 8, 12):
            _vec(lay, m, la)
    return lay


def test_effect_size_when_there_is_no_steering(lay):
    _evaluation(lay, [("probe", 4, 1.0), ("mean_diff", 8, 2.5), ("random_baseline", 12, 9.0)])
    c = select_vector(lay, TRAIT, extraction_variant="base", application_variant="instruct")
    # random_baseline is a sanity check, never picked even with the largest d
    assert (c.method, c.layer, c.selection_source, c.score) == ("mean_diff", 8, "effect_size", 2.5)
    assert c.model_variant == "base" and c.path.is_file()
    assert "effect size" in c.reason and "instruct" in c.reason


def test_steering_evidence_outranks_any_effect_size(lay):
    # d = 50 is not "more" than a 5-point steering gain: the two are never compared
    _evaluation(lay, [("probe", 4, 50.0), ("mean_diff", 8, 2.5)])
    _steering(lay, "instruct", [("probe", 12, 4.0, 45.0, 90.0), ("mean_diff", 8, 6.0, 70.0, 60.0)])
    c = select_vector(lay, TRAIT, extraction_variant="base", application_variant="instruct")
    assert (c.method, c.layer, c.selection_source) == ("probe", 12, "steering")
    assert c.score == pytest.approx(5.0) and c.coefficient == 4.0
    assert "coherence >= 75" in c.reason


def test_steering_runs_below_min_coherence_do_not_count(lay):
    _evaluation(lay, [("mean_diff", 8, 2.5)])
    _steering(lay, "instruct", [("probe", 12, 4.0, 90.0, 60.0)])
    c = select_vector(lay, TRAIT, extraction_variant="base", application_variant="instruct")
    assert c.selection_source == "effect_size"
    c = select_vector(lay, TRAIT, extraction_variant="base", application_variant="instruct",
                      min_coherence=50)
    assert (c.selection_source, c.layer, c.score) == ("steering", 12, 50.0)


def test_steering_evidence_comes_from_the_monitored_variant(lay):
    _evaluation(lay, [("mean_diff", 8, 2.5)])
    _steering(lay, "rm_lora", [("probe", 12, 4.0, 90.0, 90.0)])
    assert select_vector(lay, TRAIT, extraction_variant="base",
                         application_variant="instruct").selection_source == "effect_size"
    assert select_vector(lay, TRAIT, extraction_variant="base",
                         application_variant="rm_lora").selection_source == "steering"


def test_manual_layer_prefers_probe_then_method_filter(lay):
    c = select_vector(lay, TRAIT, extraction_variant="base", application_variant="instruct", layer=8)
    assert (c.method, c.layer, c.selection_source) == ("probe", 8, "manual")
    c = select_vector(lay, TRAIT, extraction_variant="base", application_variant="instruct",
                      layer=4, method="mean_diff")
    assert (c.method, c.layer) == ("mean_diff", 4) and "layer=4" in c.reason


def test_manual_layer_at_several_positions_asks_for_one(lay):
    _vec(lay, "probe", 8, position="response[:]")
    with pytest.raises(PipelineError, match=r"several positions .* position=\.\.\."):
        select_vector(lay, TRAIT, extraction_variant="base", application_variant="instruct", layer=8)
    c = select_vector(lay, TRAIT, extraction_variant="base", application_variant="instruct",
                      layer=8, position="response[:]")
    assert c.position == "response[:]"


def test_no_vectors_is_a_one_line_error_with_the_fix(tmp_path):
    with pytest.raises(PipelineError, match=r"no vectors for trait 'demo/optimism' .*'base'.*"
                                            r"python -m trait_pipeline.extract") as e:
        select_vector(Layout(tmp_path, "demo"), TRAIT, extraction_variant="base",
                      application_variant="instruct")
    assert "\n" not in str(e.value)


def test_vectors_without_any_score_ask_for_a_layer(lay):
    with pytest.raises(PipelineError, match=r"no score to pick one.*pass layer=N"):
        select_vector(lay, TRAIT, extraction_variant="base", application_variant="instruct")


def test_filters_that_match_nothing_say_so(lay):
    with pytest.raises(PipelineError, match=r"it has vectors, but none with layer=99"):
        select_vector(lay, TRAIT, extraction_variant="base", application_variant="instruct", layer=99)
