"""Every PNG the stages write keeps its axis labels and titles inside the canvas."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure
import pytest

from trait_pipeline.compare import plot as compare_plot
from trait_pipeline.steering_summary import heatmap_png, read_results


@pytest.fixture
def checked_figures(monkeypatch):
    """Wrap Figure.savefig: before saving, assert every label lies inside the figure."""
    seen = []
    real = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        for ax in fig.axes:
            for text in (ax.xaxis.label, ax.yaxis.label, ax.title):
                if not text.get_text() or not text.get_visible():
                    continue
                ext = text.get_window_extent(renderer)
                inside = (ext.x0 >= box.x0 - 1 and ext.y0 >= box.y0 - 1
                          and ext.x1 <= box.x1 + 1 and ext.y1 <= box.y1 + 1)
                assert inside, f"{text.get_text()!r} at {ext} outside the figure {box}"
                seen.append(text.get_text())
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return seen


@pytest.mark.parametrize("n_layers", [1, 2, 8])
def test_steering_heatmap_labels_inside(tmp_path, checked_figures, n_layers):
    runs = [{"config": {"vectors": [{"layer": la, "method": "probe", "weight": c}]},
             "result": {"trait_mean": 50.0 + c, "coherence_mean": 90.0, "n": 5}}
            for la in range(n_layers) for c in (2.0, 4.0, 8.0)]
    res = read_results({"trait": "demo/optimism", "model_variant": "rm_lora",
                        "baseline": {"trait_mean": 40.0}, "runs": runs})
    assert heatmap_png(res, tmp_path / "h.png") is not None
    assert "layer\n(output of decoder block L)" in checked_figures and "coefficient" in checked_figures


@pytest.mark.parametrize("n_prompts", [1, 4])
def test_compare_plot_labels_inside(tmp_path, checked_figures, n_prompts):
    rows = [{"prompt_id": f"p{i}", "a_response": [0.1, 0.2, 0.3], "b_response": [0.2, 0.4, 0.5],
             "per_token_diff": [0.1, 0.2, 0.2], "tokens_a": ["good", "news", "."], "diff": 0.17}
            for i in range(n_prompts)]
    record = {"a": "instruct", "b": "rm_lora", "per_prompt": rows, "trait": "demo/optimism",
              "prompt_set": "demo", "n_prompts": n_prompts, "replay": True,
              "mean": {"diff": 0.17}, "vector_source": {"layer": 10, "method": "probe",
                                                      "position": "response[:5]"}}
    compare_plot(record, tmp_path / "c.png")
    assert (tmp_path / "c.png").is_file()
    assert "projection on the trait vector" in checked_figures and "response token" in checked_figures
