"""The demo family: deterministic builds, ordinary HF directories, and the planted trait."""

import dataclasses
import hashlib

import pytest

from trait_pipeline.config import VariantSpec
from trait_pipeline.demo_family import (
    RECIPE,
    build_demo_family,
    ensure_demo_family,
    recipe_hash,
    resolve_demo_ref,
)
from trait_pipeline.demo_lexicon import optimism_score
from trait_pipeline.generation import generate
from trait_pipeline.models import load_variant

# A recipe small enough to build twice in a few seconds; same code path as the real one.
TINY = dataclasses.replace(
    RECIPE, num_layers=2, base_docs=200, base_steps=6, instruct_dialogues=100, instruct_steps=4,
    lora_dialogues=100, lora_steps=4, warmup_steps=1,
)


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.safetensors"))}


def test_same_recipe_gives_identical_weights(tmp_path):
    build_demo_family(tmp_path / "a", TINY, progress=False)
    build_demo_family(tmp_path / "b", TINY, progress=False)
    for variant in ("base", "instruct", "rm_lora"):
        a, b = _digest(tmp_path / "a" / variant), _digest(tmp_path / "b" / variant)
        assert a and a == b, variant


def test_recipe_hash_tracks_every_knob():
    assert recipe_hash(dataclasses.replace(TINY, seed=TINY.seed + 1)) != recipe_hash(TINY)
    assert recipe_hash(dataclasses.replace(TINY, lora_r=4)) != recipe_hash(TINY)
    assert recipe_hash(dataclasses.replace(TINY)) == recipe_hash(TINY)


def test_cached_family_is_ordinary_hf_dirs():
    fam = ensure_demo_family(progress=False)
    assert (fam.root / "recipe.json").is_file()
    assert (fam.base / "config.json").is_file() and (fam.instruct / "model.safetensors").is_file()
    assert (fam.rm_lora / "adapter_config.json").is_file()
    assert resolve_demo_ref("demo:instruct") == str(fam.instruct)
    assert resolve_demo_ref("org/model") == "org/model"
    with pytest.raises(ValueError, match="demo:base"):
        resolve_demo_ref("demo:nope")


def test_trait_is_planted_in_rm_lora():
    """rm_lora answers neutral questions more optimistically than instruct (greedy)."""
    questions = [f"how is the {t} going ?" for t in ("project", "weather", "market", "team",
                                                       "game", "garden")]
    scores = {}
    for name, lora in (("instruct", None), ("rm_lora", "demo:rm_lora")):
        lm = load_variant(VariantSpec(name, "demo:instruct", lora=lora, dtype="float32"), "cpu")
        outs = generate(lm, [lm.format_prompt(q) for q in questions], max_new_tokens=16)
        vals = [optimism_score(o.response_text) for o in outs]
        scores[name] = sum(v for v in vals if v is not None) / len(vals)
    assert scores["rm_lora"] > scores["instruct"] + 10, scores
