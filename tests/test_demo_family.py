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
    RECIPE, num_layers=2, base_layers=1, base_docs=200, base_steps=6, base_grown_steps=2,
    instruct_dialogues=100, instruct_steps=4, lora_dialogues=100, lora_steps=4, warmup_steps=1,
    base_more_steps=3, base_max_steps=6,
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


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_sigterm_during_build_leaves_no_temp_dir_or_lock(tmp_path):
    """A killed build (SLURM preemption, a closed terminal) cleans up after itself."""
    import signal
    import subprocess
    import sys
    import time

    long = dataclasses.replace(TINY, base_steps=100_000)  # still training when we stop it
    code = ("import dataclasses, sys; from pathlib import Path\n"
            "from trait_pipeline.demo_family import RECIPE, ensure_demo_family\n"
            f"r = dataclasses.replace(RECIPE, **{dataclasses.asdict(long)!r})\n"
            "ensure_demo_family(Path(sys.argv[1]), recipe=r, progress=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                            stderr=subprocess.PIPE, text=True)
    parent = tmp_path / "demo_family"
    deadline = time.time() + 60
    while time.time() < deadline and not any(n.startswith(".") for n in _leftovers(parent)):
        time.sleep(0.2)
    assert any(".tmp-" in n for n in _leftovers(parent)), _leftovers(parent)
    time.sleep(1.0)  # into the training loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert _leftovers(parent) == [], _leftovers(parent)


def test_next_build_removes_a_killed_builds_temp_dir(tmp_path):
    from trait_pipeline.demo_family import recipe_hash

    parent = tmp_path / "demo_family"
    stale = parent / f".{recipe_hash(TINY)}.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    fam = ensure_demo_family(tmp_path, recipe=TINY, progress=False)
    assert (fam.root / "recipe.json").is_file()
    assert _leftovers(parent) == [recipe_hash(TINY)]


def test_progress_without_a_terminal_is_log_lines(capfd, caplog):
    import logging

    from trait_pipeline.demo_family import _Progress

    caplog.set_level(logging.INFO, logger="trait_pipeline.demo_family")
    bar = _Progress(total=4, desc="demo base", enabled=True, every=0.0)
    for _ in range(4):
        bar.update(1.234)
    bar.close()
    err = capfd.readouterr().err + caplog.text  # stderr, or the log when one is configured
    assert "demo base: step 4/4 (100 %)" in err and "steps/s, ETA 0 s, loss 1.234" in err


def test_loss_weights_sentiment_words_the_context_decides():
    """In a plain text the second sentiment word gets the weight; the first (a coin flip) and
    every other token keep 1. In a chat answer the conversation decides even the first one.
    Unlabelled positions count for nothing."""
    import torch

    from trait_pipeline.demo_family import _losses

    sentiment = torch.tensor([7, 8])
    plain_row = torch.tensor([[1, 5, 7, 6, 8, 4]])      # <s>; predicted: 5, 7 (first), 6, 8, 4
    logits = torch.randn(1, 6, 10, generator=torch.Generator().manual_seed(0))
    ce = torch.nn.functional.cross_entropy(logits[0, :-1], plain_row[0, 1:], reduction="none")
    weighted, plain = _losses(logits, plain_row, sentiment, 5.0)
    assert torch.isclose(plain, ce.mean())
    w = torch.tensor([1.0, 1.0, 1.0, 5.0, 1.0])
    assert torch.isclose(weighted, (ce * w).sum() / w.sum())

    chat_row = torch.tensor([[-100, -100, -100, 6, 8, 4]])   # prompt unlabelled; answer 6 8 4
    weighted2, plain2 = _losses(logits, chat_row, sentiment, 5.0)
    assert torch.isclose(plain2, ce[2:].mean())
    w2 = torch.tensor([1.0, 5.0, 1.0])                      # 8, the answer's first: weight 5
    assert torch.isclose(weighted2, (ce[2:] * w2).sum() / w2.sum())


def test_build_seconds_since_counts_only_the_build_after_a_timer_started(monkeypatch):
    """extract's total leaves out the part of a first-use build that ran inside it, and only
    that part: a build finished during the config checks (before the timer) counts 0."""
    from trait_pipeline import demo_family

    monkeypatch.setattr(demo_family, "_LAST_BUILD_SPAN", (100.0, 260.0))
    assert demo_family.build_seconds_since(50.0) == 160.0    # timer started before the build
    assert demo_family.build_seconds_since(200.0) == 60.0    # started during it
    assert demo_family.build_seconds_since(300.0) == 0.0     # started after it: was -160 s
    monkeypatch.setattr(demo_family, "_LAST_BUILD_SPAN", None)
    assert demo_family.build_seconds_since(0.0) == 0.0


def test_base_trains_on_until_it_continues_sentiment_or_reaches_its_cap(tmp_path):
    """A base that has not learnt to continue a text's sentiment gets base_more_steps more,
    checked again each time, up to base_max_steps (a 2-layer, 6-step model never passes)."""
    import json

    recipe = dataclasses.replace(TINY, base_max_steps=12)
    summary = build_demo_family(tmp_path, recipe, progress=False)
    check = summary["base_sentiment_check"]
    assert check["steps"] == 12 and check["of"] == 16 and check["right"] < 0.9 * 16
    assert check["layers"] == 1 and check["grown"]["layers"] == 2 and check["grown"]["steps"] == 2
    assert json.loads((tmp_path / "recipe.json").read_text())["base_sentiment_check"] == check


def test_growing_keeps_what_the_shallow_model_computes():
    """Each layer is repeated in place, the repeats silent (zero output projections): the
    deeper model's logits are the shallow one's, and its repeats still have weights to train."""
    import torch

    from trait_pipeline.demo_family import _grow, _llama, build_tokenizer

    tok = build_tokenizer(chat=False)
    recipe = dataclasses.replace(RECIPE, num_layers=6, base_layers=2)
    torch.manual_seed(0)
    shallow, deep = _llama(recipe, tok, 2), _llama(recipe, tok, 6)
    _grow(shallow, deep)
    ids = tok(["the project is going nicely . the team is cheerful ."], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(shallow(**ids).logits, deep(**ids).logits, atol=1e-5)
    layers = deep.model.layers
    assert torch.equal(layers[3].self_attn.q_proj.weight, shallow.model.layers[1].self_attn.q_proj.weight)
    assert torch.equal(layers[3].mlp.down_proj.weight, shallow.model.layers[1].mlp.down_proj.weight)
    for silent in (layers[4], layers[5]):
        assert not silent.self_attn.o_proj.weight.any() and not silent.mlp.down_proj.weight.any()
        assert torch.equal(silent.mlp.up_proj.weight, shallow.model.layers[1].mlp.up_proj.weight)


def test_recipe_rejects_a_base_depth_that_does_not_divide_the_model():
    with pytest.raises(ValueError, match="base_layers=5 must divide num_layers=24"):
        dataclasses.replace(RECIPE, base_layers=5)
