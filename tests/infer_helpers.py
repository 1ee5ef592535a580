"""Helpers for the inference tests: real vectors from the demo family, written where the
layout says, without running the whole extraction stage (that has its own tests).

``write_demo_vectors`` runs the demo *base* model over the trait's positive/negative
scenario texts, takes the mean residual of every layer over the whole text, and saves
mean_diff + probe vectors, their train activations and an evaluation file, exactly in the
formats the extraction stage writes (``vectors/{pos}/{comp}/{method}/layer{L}.safetensors``,
``activations/.../train.safetensors``, ``extraction/_evaluation/{variant}.json``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from trait_pipeline.capture import record
from trait_pipeline.config import VariantSpec
from trait_pipeline.evaluation import add_combined_scores, score_vector
from trait_pipeline.jsonio import write_json
from trait_pipeline.layout import DATASETS_DIR, SCHEMA_VERSION, Layout
from trait_pipeline.models import load_variant
from trait_pipeline.vector_methods import compute, midpoint_baseline
from trait_pipeline.vector_store import atomic_save_tensors, save_vector

TRAIT = "demo/optimism"
POSITION = "all[:]"  # (the helper's window: from the sentiment word to the end)
BASE = VariantSpec("base", "demo:base", use_chat_template=False, dtype="float32")


def _acts(lm, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer's residual ``[n, seq, n_layers, d]`` (left-padded) and the token ids."""
    batch = lm.pad_batch(lm.encode(texts))
    step: dict = {}
    with torch.no_grad(), record(lm.model, range(lm.n_layers), ["residual"],
                                 on_output=lambda k, o: step.__setitem__(k, o)):
        lm.model(**batch)
    return torch.stack([step[("residual", la)] for la in range(lm.n_layers)], dim=2), batch["input_ids"]


def paired_acts(lm, pos_texts: list[str], neg_texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, n_layers, d]`` per side: the mean residual from the first word where a
    positive scenario and its negative twin differ (the sentiment word) to the end."""
    pa, pid = _acts(lm, pos_texts)
    na, nid = _acts(lm, neg_texts)
    pos, neg = [], []
    for i in range(len(pos_texts)):
        w_p, w_n = int(pid.shape[1]), int(nid.shape[1])
        diff = [k for k in range(1, min(w_p, w_n) + 1) if pid[i, -k] != nid[i, -k]]
        start = max(diff) if diff else 1  # counted from the end: both rows end together
        pos.append(pa[i, w_p - start:].mean(0))
        neg.append(na[i, w_n - start:].mean(0))
    return torch.stack(pos), torch.stack(neg)


def write_demo_vectors(experiments: Path, layers=(6, 10, 14), methods=("mean_diff", "probe"),
                       experiment: str = "demo", lm=None) -> Layout:
    lay = Layout(experiments, experiment)
    lm = lm or load_variant(BASE, device="cpu")
    folder = DATASETS_DIR / "traits" / TRAIT
    pos_txt = (folder / "positive.txt").read_text().split("\n")
    neg_txt = (folder / "negative.txt").read_text().split("\n")
    pairs = [(p, n) for p, n in zip(pos_txt, neg_txt) if p.strip() and n.strip()]
    pos, neg = paired_acts(lm, [p for p, _ in pairs], [n for _, n in pairs])
    n_val = 6
    tr_p, tr_n, va_p, va_n = pos[:-n_val], neg[:-n_val], pos[-n_val:], neg[-n_val:]
    act_dir = lay.activations_dir(TRAIT, "base", POSITION, "residual")
    atomic_save_tensors(act_dir / "train.safetensors", {"pos": tr_p, "neg": tr_n}, {})
    atomic_save_tensors(act_dir / "val.safetensors", {"pos": va_p, "neg": va_n}, {})
    rows = []
    for method in methods:
        for layer in layers:
            tv = compute(method, tr_p[:, layer], tr_n[:, layer])
            save_vector(lay.vector_path(TRAIT, "base", POSITION, "residual", method, layer), tv.vector, {
                "experiment": experiment, "trait": TRAIT, "model": "demo:base", "revision": None,
                "lora": None, "model_variant": "base", "layer": layer, "component": "residual",
                "position": POSITION, "method": method, "dataset_hash": "test",
                "baseline": midpoint_baseline(tr_p[:, layer], tr_n[:, layer], tv.vector),
            })
            s = score_vector(tr_p[:, layer], tr_n[:, layer], va_p[:, layer], va_n[:, layer], tv.vector)
            rows.append({"trait": TRAIT, "method": method, "layer": layer, "component": "residual",
                         "position": POSITION, **s.as_dict()})
    write_json(lay.evaluation_path("base"),
               {"schema_version": SCHEMA_VERSION, "results": add_combined_scores(rows)})
    return lay


def compose(stage: str, *overrides: str):
    """The stage config exactly as the command line would compose it (real Hydra)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from trait_pipeline import resolvers
    from trait_pipeline.layout import CONF_DIR

    resolvers.register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=stage, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def cli(module: str, *args: str, env: dict | None = None, timeout: int = 300):
    """Run ``python -m trait_pipeline.<module> args``; returns the CompletedProcess."""
    import os
    import subprocess
    import sys

    from trait_pipeline.layout import PROJECT_ROOT

    return subprocess.run(
        [sys.executable, "-m", f"trait_pipeline.{module}", *args], cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **(env or {})},
    )
