"""Loading variants (demo family) and prompting them: chat template, one BOS, left padding."""

import pytest
import torch

from trait_pipeline.config import VariantSpec
from trait_pipeline.errors import PipelineError
from trait_pipeline.generation import generate
from trait_pipeline.layers import component_module, decoder_layers, num_layers
from trait_pipeline.models import load_variant, pick_device, torch_dtype

BASE = VariantSpec("base", "demo:base", use_chat_template=False, dtype="float32")
INSTRUCT = VariantSpec("instruct", "demo:instruct", dtype="float32")
RM_LORA = VariantSpec("rm_lora", "demo:instruct", lora="demo:rm_lora", dtype="float32")


@pytest.fixture(scope="module")
def models():
    return {s.name: load_variant(s, device="cpu") for s in (BASE, INSTRUCT, RM_LORA)}


def test_all_three_demo_variants_load(models):
    from peft import PeftModel

    assert not models["base"].chat and models["instruct"].chat and models["rm_lora"].chat
    assert isinstance(models["rm_lora"].model, PeftModel)
    assert not isinstance(models["instruct"].model, PeftModel)
    for lm in models.values():
        assert lm.n_layers >= 24 and not lm.model.training
        assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token_id is not None
    # the peft wrapper does not hide the decoder blocks
    assert len(decoder_layers(models["rm_lora"].model)) == num_layers(models["instruct"].model)


def test_rm_lora_logits_differ_from_instruct(models):
    text = models["instruct"].format_prompt("how is the project going ?")
    batch = models["instruct"].pad_batch(models["instruct"].encode([text]))
    with torch.no_grad():
        a = models["instruct"].model(**batch).logits
        b = models["rm_lora"].model(**batch).logits
    assert a.shape == b.shape and not torch.allclose(a, b, atol=1e-4)


def test_exactly_one_bos(models):
    for lm in models.values():
        bos = lm.tokenizer.bos_token_id
        text = lm.format_prompt("how is the project going ?")
        ids = lm.encode([text])[0]
        assert ids[0] == bos and ids[1] != bos
        # raw text that already starts with the BOS string does not get a second one
    base = models["base"]
    ids = base.encode([base.tokenizer.bos_token + " the plan is"])[0]
    assert ids.count(base.tokenizer.bos_token_id) == 1


def test_chat_template_only_where_the_variant_uses_one(models):
    assert models["base"].format_prompt("hello") == "hello"
    assert models["instruct"].format_prompt("hello") != "hello"


def test_left_padding(models):
    lm = models["instruct"]
    rows = lm.encode([lm.format_prompt("hi"), lm.format_prompt("how is the project going ?")])
    batch = lm.pad_batch(rows)
    short = len(rows[0])
    width = batch["input_ids"].shape[1]
    assert batch["attention_mask"][0].tolist() == [0] * (width - short) + [1] * short
    assert batch["input_ids"][0, -short:].tolist() == rows[0]


def test_batched_generation_matches_single_and_keeps_the_boundary(models):
    lm = models["base"]
    prompts = ["the project is going", "the weather looks", "our team feels"]
    together = generate(lm, prompts, max_new_tokens=6, batch_size=3)
    for p, g in zip(prompts, together):
        alone = generate(lm, [p], max_new_tokens=6, batch_size=1)[0]
        assert g.response_ids == alone.response_ids
        # prompt text + response text re-tokenizes to the very tokens that were generated
        body = [t for t in g.response_ids if t != lm.tokenizer.eos_token_id]
        assert lm.encode([g.prompt_text + g.response_text])[0] == g.prompt_ids + body


def test_bad_names():
    with pytest.raises(PipelineError, match="unknown dtype 'float8'"):
        torch_dtype("float8")
    with pytest.raises(PipelineError, match="bad device"):
        pick_device("gpu0")
    with pytest.raises(PipelineError, match="cannot load model .*no such directory"):
        load_variant(VariantSpec("x", "/nonexistent/model/dir", dtype="float32"), device="cpu")


def test_components_resolve_on_plain_and_peft_models(models):
    for lm in (models["instruct"], models["rm_lora"]):
        for comp in ("residual", "attn_out", "mlp_out", "k_proj", "v_proj", "attn_contribution"):
            assert component_module(lm.model, 10, comp) is not None
    with pytest.raises(PipelineError, match="layer 99 out of range"):
        component_module(models["base"].model, 99, "residual")
