"""A small experiment tree in the documented on-disk formats, for the dashboard tests.

Values are made up but distinct per variant, so a test can tell which file a plot shows.
The real pipeline's outputs (the ``demo_experiment`` fixture, when present) are used by the
same tests; this tree keeps them runnable without the stages.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from trait_pipeline.jsonio import write_json
from trait_pipeline.layout import SCHEMA_VERSION, Layout

EXPERIMENT = "dash"
TRAIT = "demo/optimism"
POSITION = "response[:5]"
PROMPT_SET = "demo_prompts"
LAYERS = list(range(6))
METHODS = ["mean_diff", "probe"]
COEFS = [-4.0, 2.0, 4.0, 8.0]
OFFSET = {"base": 0.0, "instruct": 0.1, "rm_lora": 0.3}


def _eval_rows(variant: str) -> list[dict]:
    rows = []
    for m_i, method in enumerate(METHODS):
        for layer in LAYERS:
            acc = round(0.5 + 0.07 * layer + 0.02 * m_i + OFFSET[variant] / 10, 4)
            d = round(0.3 * layer + m_i + OFFSET[variant], 4)
            rows.append({"trait": TRAIT, "method": method, "layer": layer, "component": "residual",
                         "position": POSITION, "val_accuracy": min(acc, 1.0), "val_effect_size": d,
                         "polarity_correct": True})
    return rows


def _steering(lay: Layout, variant: str) -> None:
    d = lay.steering_dir(TRAIT, variant, POSITION, PROMPT_SET)
    base_mean = 20.0 + 10 * OFFSET[variant]
    runs = []
    for layer in (1, 2, 3):
        for coef in COEFS:
            trait_mean = base_mean + coef * (layer + 1) * (1 + OFFSET[variant])
            coherence = 95.0 - 6.0 * abs(coef) - layer
            ts = "2026-01-01_00-00-00"
            rel = Path("responses") / "residual" / f"L{layer}_c{coef:g}_{ts}.json"
            key = f"L{layer}_c{coef:g}_probe"
            write_json(d / rel, [
                {"question": f"Question {q}?", "response": f"{variant} L{layer} c{coef:g} answer {q}",
                 "trait_score": trait_mean + q, "coherence_score": coherence} for q in range(3)])
            runs.append({
                "key": key,
                "config": {"vectors": [{"layer": layer, "method": "probe", "weight": coef,
                                        "component": "residual", "position": POSITION}]},
                "result": {"trait_mean": trait_mean, "coherence_mean": coherence, "n": 3},
                "vector_source": {"model_variant": "base"},
                "responses": rel.as_posix(), "timestamp": ts,
            })
    write_json(d / "responses" / "baseline.json", [
        {"question": f"Question {q}?", "response": f"{variant} baseline {q}",
         "trait_score": base_mean, "coherence_score": 97.0} for q in range(3)])
    write_json(d / "results.json", {
        "schema_version": SCHEMA_VERSION, "trait": TRAIT, "model_variant": variant,
        "vector_source": {"model_variant": "base", "position": POSITION},
        "judge": {"name": "offline"},
        "baseline": {"trait_mean": base_mean, "coherence_mean": 97.0, "n": 3}, "runs": runs,
    })


def _trace(variant: str, pid: int, n_prompt: int, n_resp: int, shift: float) -> tuple[dict, dict]:
    prompt = [round(0.1 * i + shift, 4) for i in range(n_prompt)]
    resp = [round(0.5 + 0.2 * i * (1 + shift) + 0.05 * pid, 4) for i in range(n_resp)]
    proj = {
        "schema_version": SCHEMA_VERSION,
        "metadata": {"prompt_id": str(pid), "prompt_set": PROMPT_SET, "model_variant": variant,
                     "n_prompt_tokens": n_prompt, "n_response_tokens": n_resp,
                     "vector_source": {"model_variant": "base", "trait": TRAIT, "layer": 2,
                                       "method": "probe", "component": "residual",
                                       "position": POSITION, "selection_source": "effect_size"}},
        "projections": {"prompt": prompt, "response": resp},
        "token_norms": {"prompt": [10.0 + i for i in range(n_prompt)],
                        "response": [12.0 + i for i in range(n_resp)]},
        "activation_norms": {"prompt": [1.0 + la for la in LAYERS],
                             "response": [2.0 + la for la in LAYERS]},
    }
    response = {
        "prompt": {"text": f"prompt {pid}", "tokens": [f"p{i}" for i in range(n_prompt)],
                   "token_ids": list(range(n_prompt)), "n_tokens": n_prompt},
        "response": {"text": f"response {pid}", "tokens": [f" r{i}" for i in range(n_resp)],
                     "token_ids": list(range(n_resp)), "n_tokens": n_resp},
        "metadata": {"model_variant": variant, "prompt_set": PROMPT_SET, "prompt_id": pid},
    }
    return proj, response


def make_fixture_experiment(root: Path) -> Layout:
    """Write the tree under ``root/dash`` and return its layout."""
    lay = Layout(root, EXPERIMENT)
    for variant in ("base", "instruct"):
        for method in METHODS:
            for layer in LAYERS:
                path = lay.vector_path(TRAIT, variant, POSITION, "residual", method, layer)
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({"vector": torch.ones(4) * (layer + 1)}, str(path))
        rows = _eval_rows(variant)
        write_json(lay.evaluation_path(variant), {"schema_version": SCHEMA_VERSION,
                                                  "model_variant": variant, "results": rows})
        # where the extract stage writes it: beside the vectors of one position/component
        lens_path = lay.vectors_dir(TRAIT, variant, POSITION, "residual", "probe").parent / "logit_lens.json"
        write_json(lens_path, {
            "trait": TRAIT, "component": "residual", "position": POSITION, "n_layers": 6,
            "methods": {m: {"mid": {"layer": 2, "pct": 40,
                                    "toward": [{"token": f"{variant}_good", "value": 3.0}],
                                    "away": [{"token": f"{variant}_bad", "value": -2.0}]},
                            "late": {"layer": 5, "pct": 90,
                                     "toward": [{"token": "bright", "value": 2.5}],
                                     "away": [{"token": "gloom", "value": -2.5}]}}
                        for m in METHODS}})
    for variant in ("instruct", "rm_lora"):
        _steering(lay, variant)
    for pid in (1, 2):
        for variant, n_resp in (("instruct", 6), ("rm_lora", 8)):
            proj, resp = _trace(variant, pid, 4, n_resp, OFFSET[variant])
            write_json(lay.projection_path(variant, TRAIT, PROMPT_SET, pid), proj)
            write_json(lay.inference_response_path(variant, PROMPT_SET, pid), resp)
        # rm_lora re-reading instruct's tokens: the same-token comparison
        proj, resp = _trace("rm_lora", pid, 4, 6, 0.25)
        write_json(lay.projection_path("rm_lora", TRAIT, PROMPT_SET, pid, "instruct"), proj)
        write_json(lay.inference_response_path("rm_lora", PROMPT_SET, pid, "instruct"),
                   _trace("instruct", pid, 4, 6, OFFSET["instruct"])[1])
    return lay
