"""The architecture matrix: every family our presets and users name, as a tiny random-weight
stand-in built from its real transformers config class and loaded by ``load_variant``.

For each: residual capture vs ``output_hidden_states``, each component against a hook on the
module it must be (or a one-line refusal), steering (all / response / batched rows /
ablation), a local LoRA through a ``lora:`` variant, the logit lens against the model's own
logits, and the family's prompt formatting (chat template, system role, one BOS).
"""

from __future__ import annotations

import pytest
import torch

from trait_pipeline.archs.standins import STANDINS, build_lora, build_standin
from trait_pipeline.capture import record
from trait_pipeline.config import VariantSpec
from trait_pipeline.errors import PipelineError
from trait_pipeline.generation import generate
from trait_pipeline.layers import COMPONENTS, component_module, decoder_layers
from trait_pipeline.logit_lens import lens_logits
from trait_pipeline.models import load_variant
from trait_pipeline.steering_ops import RowSteering, SteeringTerm, steer

ARCHS = sorted(STANDINS)
PROMPTS = ["the project is going well", "how is the weather ?"]

# Written independently of layers.py: the module each component must be, per family
_LLAMA = {"attn_out": "self_attn.o_proj", "mlp_out": "mlp.down_proj", "k_proj": "self_attn.k_proj",
          "v_proj": "self_attn.v_proj", "attn_contribution": "self_attn.o_proj",
          "mlp_contribution": "mlp.down_proj"}
_POST = {**_LLAMA, "attn_contribution": "post_attention_layernorm",
         "mlp_contribution": "post_feedforward_layernorm"}
EXPECTED = {
    "llama": ("model.layers", _LLAMA), "mistral": ("model.layers", _LLAMA),
    "qwen2": ("model.layers", _LLAMA), "qwen3": ("model.layers", _LLAMA),
    "gemma2": ("model.layers", _POST), "gemma3": ("model.layers", _POST),
    "olmo2": ("model.layers", _POST),
    "phi3": ("model.layers", {**_LLAMA, "k_proj": None, "v_proj": None}),
    "gpt2": ("transformer.h", {"attn_out": "attn.c_proj", "mlp_out": "mlp.c_proj", "k_proj": None,
                               "v_proj": None, "attn_contribution": "attn.c_proj",
                               "mlp_contribution": "mlp.c_proj"}),
    "gpt_neox": ("gpt_neox.layers", {"attn_out": "attention.dense", "mlp_out": "mlp.dense_4h_to_h",
                                     "k_proj": None, "v_proj": None,
                                     "attn_contribution": "attention.dense",
                                     "mlp_contribution": "mlp.dense_4h_to_h"}),
    "qwen3_moe": ("model.layers", {**_LLAMA, "mlp_out": "mlp", "mlp_contribution": "mlp"}),
    "mixtral": ("model.layers", {**_LLAMA, "mlp_out": "mlp", "mlp_contribution": "mlp"}),
}


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("standins")


@pytest.fixture(scope="session")
def loaded(standin_dir):
    """Each stand-in loaded once per session, as a chat variant (float32, CPU)."""
    cache: dict = {}

    def get(arch: str, **kw):
        key = (arch, tuple(sorted(kw.items())))
        if key not in cache:
            path = build_standin(arch, standin_dir)
            spec = VariantSpec(kw.pop("name", "instruct"), str(path), dtype="float32", **kw)
            cache[key] = load_variant(spec, device="cpu")
        return cache[key]

    return get


def _batch(lm, prompts=PROMPTS):
    return lm.pad_batch(lm.encode([lm.format_prompt(p) for p in prompts]))


def _resolve(root, path):
    node = root
    for part in filter(None, path.split(".")):
        node = getattr(node, part)
    return node


def test_matrix_covers_the_families_the_issue_names():
    assert set(EXPECTED) == set(STANDINS)
    for name in ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "olmo2",
                 "gpt2", "gpt_neox", "qwen3_moe", "mixtral"):
        assert name in STANDINS


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_is_hidden_states_and_last_block_is_before_the_final_norm(arch, loaded):
    lm = loaded(arch)
    blocks_path, _ = EXPECTED[arch]
    assert decoder_layers(lm.model) is _resolve(lm.model, blocks_path)
    n = lm.n_layers
    batch = _batch(lm)
    with torch.no_grad(), record(lm.model, range(n), ["residual"]) as rec:
        out = lm.model(**batch, output_hidden_states=True)
    hs = out.hidden_states
    assert len(hs) == n + 1
    for la in range(n - 1):
        assert torch.equal(rec.calls[("residual", la)][0], hs[la + 1]), (arch, la)
    last = rec.calls[("residual", n - 1)][0]
    # documented: HF stores the last block's output after the final norm, we keep it before
    norm = _resolve(lm.model, {"gpt2": "transformer.ln_f",
                               "gpt_neox": "gpt_neox.final_layer_norm"}.get(arch, "model.norm"))
    assert not torch.allclose(last, hs[n], atol=1e-3)
    torch.testing.assert_close(norm(last), hs[n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_component_is_the_right_module_or_refused_in_one_line(arch, loaded):
    lm = loaded(arch)
    _, table = EXPECTED[arch]
    blocks = decoder_layers(lm.model)
    layer = 1
    batch = _batch(lm)
    ok = [c for c in COMPONENTS if c == "residual" or table[c] is not None]
    for comp in COMPONENTS:
        if comp != "residual" and table[comp] is None:
            with pytest.raises(PipelineError) as err:
                component_module(lm.model, layer, comp)
            msg = str(err.value)
            assert "\n" not in msg and comp in msg and lm.model.config.model_type in msg
    # a hook on the module the table names sees exactly what `record` captures
    mine: dict = {}
    handles = [(_resolve(blocks[layer], table.get(c, "") if c != "residual" else "")
                .register_forward_hook(lambda m, i, o, c=c: mine.__setitem__(
                    c, (o[0] if isinstance(o, tuple) else o).detach().clone())))
               for c in ok]
    try:
        with torch.no_grad(), record(lm.model, [layer - 1, layer], ok) as rec:
            lm.model(**batch)
    finally:
        for h in handles:
            h.remove()
    for c in ok:
        assert torch.equal(rec.calls[(c, layer)][0], mine[c]), (arch, c)
    # the contributions are what the block adds to the residual stream
    delta = rec.calls[("residual", layer)][0] - rec.calls[("residual", layer - 1)][0]
    added = rec.calls[("attn_contribution", layer)][0] + rec.calls[("mlp_contribution", layer)][0]
    torch.testing.assert_close(added, delta, rtol=1e-4, atol=1e-4)


def _direction(lm, layer: int, scale: float = 8.0) -> torch.Tensor:
    """A random direction scaled to a multiple of the layer's typical residual norm."""
    with torch.no_grad(), record(lm.model, [layer], ["residual"]) as rec:
        lm.model(**_batch(lm))
    norm = rec.calls[("residual", layer)][0].norm(dim=-1).mean()
    g = torch.Generator().manual_seed(layer)
    v = torch.randn(rec.calls[("residual", layer)][0].shape[-1], generator=g)
    return v / v.norm() * norm * scale


@pytest.mark.parametrize("arch", ARCHS)
def test_steering_all_response_rows_and_ablation(arch, loaded):
    lm = loaded(arch)
    layer = 1
    v = _direction(lm, layer)
    base = [g.response_ids for g in generate(lm, PROMPTS, max_new_tokens=6, batch_size=2)]
    for positions in ("all", "response"):
        with steer(lm.model, [SteeringTerm(layer, "residual", v, 1.0)], positions=positions):
            got = [g.response_ids for g in generate(lm, PROMPTS, max_new_tokens=6, batch_size=2)]
        assert got != base, (arch, positions)
    # response: the prompt's positions stay as they were, except the last one
    batch = _batch(lm)
    with torch.no_grad(), record(lm.model, [layer], ["residual"]) as plain:
        lm.model(**batch)
    with torch.no_grad(), steer(lm.model, [SteeringTerm(layer, "residual", v, 1.0)], "response"), \
            record(lm.model, [layer], ["residual"]) as steered:
        lm.model(**batch)
    a, b = plain.calls[("residual", layer)][0], steered.calls[("residual", layer)][0]
    assert torch.equal(a[:, :-1], b[:, :-1])
    torch.testing.assert_close(b[:, -1] - a[:, -1], v.expand_as(a[:, -1]), rtol=1e-4, atol=1e-3)
    # batched rows (two configs x two prompts in one generate) == each config on its own
    configs = [[SteeringTerm(layer, "residual", v, 1.0)], [SteeringTerm(layer, "residual", v, -1.0)]]
    rows = [cfg for cfg in configs for _ in PROMPTS]
    together = generate(lm, PROMPTS * 2, max_new_tokens=6, batch_size=4,
                        batch_context=RowSteering(lm.model, rows))
    for k, cfg in enumerate(configs):
        with steer(lm.model, cfg):
            alone = generate(lm, PROMPTS, max_new_tokens=6, batch_size=2)
        assert [g.response_ids for g in together[2 * k: 2 * k + 2]] == \
            [g.response_ids for g in alone], (arch, k)
    # ablation: after the hook nothing is left along the direction
    with torch.no_grad(), steer(lm.model, [SteeringTerm(layer, "residual", v, ablate=True)]), \
            record(lm.model, [layer], ["residual"]) as abl:
        lm.model(**batch)
    h = abl.calls[("residual", layer)][0]
    proj = h @ (v / v.norm())
    assert proj.abs().max() < 1e-4 * h.norm(dim=-1).max()
    assert (a @ (v / v.norm())).abs().max() > 1e-3  # there was something to remove


@pytest.mark.parametrize("arch", ARCHS)
def test_a_local_lora_loads_through_a_lora_variant_and_changes_logits(arch, loaded, standin_dir):
    from peft import PeftModel

    lm = loaded(arch)
    adapter = build_lora(build_standin(arch, standin_dir), standin_dir / f"{arch}-lora", arch)
    lora = load_variant(VariantSpec("rm_lora", str(build_standin(arch, standin_dir)),
                                    lora=str(adapter), dtype="float32"), device="cpu")
    assert isinstance(lora.model, PeftModel)
    assert decoder_layers(lora.model) is not None and lora.n_layers == lm.n_layers
    batch = _batch(lm)
    with torch.no_grad():
        a, b = lm.model(**batch).logits, lora.model(**batch).logits
    assert a.shape == b.shape and not torch.allclose(a, b, atol=1e-4)
    # components resolve through the peft wrapper too (LoRA-wrapped projections included)
    with torch.no_grad(), record(lora.model, [1], ["residual", "attn_out"]) as rec:
        lora.model(**batch)
    assert rec.calls[("attn_out", 1)][0].shape[-1] == lm.model.config.hidden_size
    assert rec.calls[("residual", 1)][0].shape[:2] == batch["input_ids"].shape


@pytest.mark.parametrize("arch", ARCHS)
def test_logit_lens_of_the_last_block_is_the_models_own_logits(arch, loaded):
    lm = loaded(arch)
    n = lm.n_layers
    batch = _batch(lm)
    with torch.no_grad(), record(lm.model, [n - 1], ["residual"]) as rec:
        logits = lm.model(**batch).logits
    last = rec.calls[("residual", n - 1)][0]
    torch.testing.assert_close(lens_logits(lm.model, last), logits, rtol=1e-4, atol=1e-4)
    cap = getattr(lm.model.config, "final_logit_softcapping", None)
    if cap:  # the cap matters at this scale: without it the lens would be off
        norm = lm.model.model.norm
        raw = lm.model.lm_head(norm(last))
        assert logits.abs().max() <= cap and not torch.allclose(raw, logits, atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_formatting_follows_the_family(arch, loaded):
    spec = STANDINS[arch]
    chat, raw = loaded(arch), loaded(arch, name="base", use_chat_template=False)
    tok = chat.tokenizer
    # use_chat_template: false -> the text itself, one BOS where the family adds one, never two
    assert not raw.chat and raw.format_prompt("how is it going ?") == "how is it going ?"
    ids = raw.encode(["how is it going ?"])[0]
    assert tok.decode(ids, skip_special_tokens=True).strip() == "how is it going ?"
    if spec.bos and spec.adds_bos:
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        again = raw.encode([spec.bos + " how is it going ?"])[0]
        assert again.count(tok.bos_token_id) == 1
    elif tok.bos_token_id is not None:
        assert tok.bos_token_id not in ids
    if spec.chat_template is None:  # base-model families: asking for a template gets none
        assert not chat.chat and chat.format_prompt("hello") == "hello"
        return
    text = chat.format_prompt("how is it going ?")
    assert chat.chat and text != "how is it going ?" and "how is it going ?" in text
    ids = chat.encode([text])[0]
    if spec.bos and "bos_token" in spec.chat_template:
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    # a system prompt is kept: in its own turn, or merged into the user turn (Gemma)
    sys_text = chat.format_prompt("how is it going ?", system_prompt="be brief .")
    assert "be brief ." in sys_text and sys_text.index("be brief .") < sys_text.index("how is it going ?")
    if arch == "gemma2":  # the template refuses a system role: merged into the first user turn
        with pytest.raises(Exception, match="System role not supported"):
            tok.apply_chat_template([{"role": "system", "content": "x"},
                                     {"role": "user", "content": "y"}], tokenize=False)
        assert sys_text == chat.format_prompt("be brief .\n\nhow is it going ?")
    assert chat.encode([sys_text])[0].count(tok.bos_token_id) <= 1
