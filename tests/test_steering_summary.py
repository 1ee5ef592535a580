"""Reading steering results (ours and the original's shape): best coefficient per layer."""

import json

import pytest

from trait_pipeline.errors import PipelineError
from trait_pipeline.steering_summary import (
    best_per_layer,
    format_summary,
    heatmap_png,
    main,
    read_results,
)


def _run(layer, coef, trait, coherence):
    return {"config": {"vectors": [{"layer": layer, "method": "probe", "weight": coef}]},
            "result": {"trait_mean": trait, "coherence_mean": coherence, "n": 5}}


ORIGINAL_SHAPE = {"baseline": {"trait_mean": 40.0}, "runs": [
    _run(10, 4.0, 70.0, 90.0), _run(10, 8.0, 95.0, 50.0),   # 8.0 is better but incoherent
    _run(20, 4.0, 45.0, 95.0), _run(20, 8.0, 60.0, 80.0),
    _run(30, 4.0, 99.0, 20.0)]}


def test_best_coherent_coefficient_per_layer_and_delta_over_baseline():
    table = best_per_layer(read_results(ORIGINAL_SHAPE), min_coherence=75)
    assert (table[10].best.coef, table[10].best.delta) == (4.0, 30.0)
    assert (table[20].best.coef, table[20].best.delta) == (8.0, 20.0)
    assert table[30].best is None and table[30].most_coherent.coef == 4.0
    text = format_summary(read_results(ORIGINAL_SHAPE), 75)
    assert "no run reaches coherence 75" in text and "delta  +30.0" in text
    # a lower threshold admits the incoherent run
    assert best_per_layer(read_results(ORIGINAL_SHAPE), min_coherence=40)[10].best.coef == 8.0


def test_heatmap_png_and_command_line(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(ORIGINAL_SHAPE))
    png = heatmap_png(read_results(path), tmp_path / "h.png", 75)
    assert png and (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(path)]) == 0 and "layer  10" in capsys.readouterr().out


def test_unreadable_results_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(PipelineError):
        read_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
