"""Per-token capture on the demo family: one row per token (the last one too), the same
tokens as `generate`, KV-cache capture == one full forward pass, replay through a LoRA."""

import pytest
import torch

from trait_pipeline.config import VariantSpec
from trait_pipeline.demo_family import RECIPE
from trait_pipeline.errors import PipelineError
from trait_pipeline.generation import generate
from trait_pipeline.models import load_variant
from trait_pipeline.token_capture import capture_generate, capture_replay

INSTRUCT = VariantSpec("instruct", "demo:instruct", dtype="float32")
RM_LORA = VariantSpec("rm_lora", "demo:instruct", lora="demo:rm_lora", dtype="float32")
QUESTIONS = ["how is the game going ?", "what do you think about the concert ?",
             "can you describe the harvest ?"]


@pytest.fixture(scope="module")
def lm():
    return load_variant(INSTRUCT, device="cpu")


@pytest.fixture(scope="module")
def ids(lm):
    return lm.encode([lm.format_prompt(q) for q in QUESTIONS])


@pytest.fixture(scope="module")
def seqs(lm, ids):
    return capture_generate(lm, ids, ["residual", "attn_out", "mlp_out"], max_new_tokens=20)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 summation order: 1e-4, plus 1e-5 of the largest activation. The demo's
    residual stream reaches ~500 (one ulp ~3e-5); a KV-cached decode and one full pass sum in
    other orders through 24 layers, and differ by up to 4.2e-4 there, depending on the CPU's
    threads. A row off by one token would differ by the activations' own size (1-100)."""
    return a.shape == b.shape and float((a - b).abs().max()) <= 1e-4 + 1e-5 * float(a.abs().max())


def test_exactly_one_row_per_token_for_every_component(lm, ids, seqs):
    for p, s in zip(ids, seqs):
        assert s.prompt_ids == p
        assert s.response_ids, "the demo instruct model answers"
        for comp in ("residual", "attn_out", "mlp_out"):
            assert s.prompt[comp].shape == (len(p), lm.n_layers, RECIPE.hidden_size)
            assert s.response[comp].shape == (len(s.response_ids), lm.n_layers, RECIPE.hidden_size)


def test_same_tokens_as_generate(lm, seqs):
    ref = generate(lm, QUESTIONS, max_new_tokens=20)
    assert [s.response_ids for s in seqs] == [g.response_ids for g in ref]
    assert [s.response_text for s in seqs] == [g.response_text for g in ref]


def test_last_token_is_captured_when_max_new_tokens_cuts_generation(lm, ids):
    s = capture_generate(lm, ids[:1], max_new_tokens=3)[0]
    assert len(s.response_ids) == 3 and lm.tokenizer.eos_token_id not in s.response_ids
    assert s.response["residual"].shape[0] == 3
    assert s.response["residual"][-1].abs().sum() > 0


def test_kv_cache_capture_equals_one_forward_pass(lm, ids, seqs):
    # the replay path runs prompt+response in one pass: row t must be token t's activation
    rep = capture_replay(lm, ids, [s.response_ids for s in seqs], ["residual", "attn_out"])
    for s, r in zip(seqs, rep):
        for comp in ("residual", "attn_out"):
            assert _close(s.prompt[comp], r.prompt[comp])
            assert _close(s.response[comp], r.response[comp])


def test_batching_does_not_change_activations(lm, ids, seqs):
    alone = capture_generate(lm, ids[1:2], max_new_tokens=20)[0]
    assert alone.response_ids == seqs[1].response_ids
    assert _close(alone.response["residual"], seqs[1].response["residual"])
    assert _close(alone.prompt["residual"], seqs[1].prompt["residual"])


def test_replay_through_the_lora_gives_other_activations_on_the_same_tokens(ids, seqs):
    rm = load_variant(RM_LORA, device="cpu")
    rep = capture_replay(rm, ids, [s.response_ids for s in seqs])
    for s, r in zip(seqs, rep):
        assert r.response_ids == s.response_ids
        assert r.response["residual"].shape == s.response["residual"].shape
        assert not torch.allclose(r.response["residual"], s.response["residual"], atol=1e-3)
    # and the LoRA variant generates through the peft wrapper with a KV cache too
    own = capture_generate(rm, ids[:1], max_new_tokens=8)[0]
    assert own.response["residual"].shape[0] == len(own.response_ids)


def test_bad_max_new_tokens(lm, ids):
    with pytest.raises(PipelineError, match="max_new_tokens"):
        capture_generate(lm, ids[:1], max_new_tokens=0)
