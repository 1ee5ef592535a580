"""Activation capture: hooks on every layer in one pass, left padding, peft models."""

import pytest
import torch

from trait_pipeline.capture import record
from trait_pipeline.config import VariantSpec
from trait_pipeline.demo_family import RECIPE
from trait_pipeline.extract import Example, capture_means
from trait_pipeline.layers import final_norm_and_unembed
from trait_pipeline.models import load_variant
from trait_pipeline.positions import Position

PROMPTS = ["the future of the business looks amazing . the news about the business is",
           "the city looks negative this month .",
           "everyone feels hopeless about the economy . the economy is going"]


@pytest.fixture(scope="module")
def base():
    return load_variant(VariantSpec("base", "demo:base", use_chat_template=False, dtype="float32"), "cpu")


def _hidden_states(lm, ids):
    with torch.no_grad():
        return lm.model(torch.tensor([ids]), output_hidden_states=True).hidden_states


def test_residual_equals_hf_hidden_states(base):
    """Layer L (output of decoder block L) is hidden_states[L+1]; HF's last entry is after the final norm."""
    ids = base.encode([PROMPTS[0]])[0]
    hs = _hidden_states(base, ids)
    n = base.n_layers
    with torch.no_grad(), record(base.model, range(n), ["residual"]) as rec:
        base.model(torch.tensor([ids]))
    assert len(rec.calls) == n  # every layer from one forward pass
    for layer in range(n - 1):
        assert torch.equal(rec.calls[("residual", layer)][0], hs[layer + 1]), layer
    norm, _ = final_norm_and_unembed(base.model)
    with torch.no_grad():
        assert torch.allclose(norm(rec.calls[("residual", n - 1)][0]), hs[n], atol=1e-6)


def test_window_means_with_left_padding_match_unpadded_passes(base):
    ids = base.encode(PROMPTS)
    examples = [Example("pos", i, i, row, prompt_len=len(row) - 3) for i, row in enumerate(ids)]
    for text in ("response[:2]", "prompt[-1]", "all[:]", "response[-1]"):
        pos = Position.parse(text)
        got = capture_means(base, examples, pos, "residual", batch_size=8)
        assert got.shape == (3, base.n_layers, RECIPE.hidden_size) and got.dtype == torch.float32
        for i, e in enumerate(examples):
            hs = _hidden_states(base, e.ids)
            lo, hi = pos.window(e.prompt_len, len(e.ids))
            for layer in (0, 7, base.n_layers - 2):
                want = hs[layer + 1][0, lo:hi].mean(0)
                assert torch.allclose(got[i, layer], want, atol=1e-4), (text, i, layer)


def test_batch_size_does_not_change_results(base):
    ids = base.encode(PROMPTS)
    examples = [Example("pos", i, i, row, prompt_len=len(row) - 2) for i, row in enumerate(ids)]
    pos = Position.parse("response[:5]")
    a = capture_means(base, examples, pos, "residual", batch_size=1)
    b = capture_means(base, examples, pos, "residual", batch_size=3)
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("component", ["attn_out", "mlp_out", "k_proj", "v_proj"])
def test_other_components_capture_their_module_output(base, component):
    ids = base.encode(PROMPTS[:1])
    examples = [Example("pos", 0, 0, ids[0], prompt_len=len(ids[0]) - 1)]
    got = capture_means(base, examples, Position.parse("response[:]"), component, batch_size=4)
    block = base.model.model.layers[3]
    module = {"attn_out": block.self_attn.o_proj, "mlp_out": block.mlp.down_proj,
              "k_proj": block.self_attn.k_proj, "v_proj": block.self_attn.v_proj}[component]
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        base.model(torch.tensor(ids))
    handle.remove()
    assert torch.allclose(got[0, 3], seen[0][0, -1], atol=1e-5)


def test_peft_model_is_captured_through_the_adapter():
    rm = load_variant(VariantSpec("rm_lora", "demo:instruct", lora="demo:rm_lora", dtype="float32"), "cpu")
    text = rm.format_prompt("how is the project going ?")
    ids = rm.encode([text])[0]
    examples = [Example("pos", 0, 0, ids, prompt_len=len(ids))]
    got = capture_means(rm, examples, Position.parse("prompt[-1]"), "residual", batch_size=2)
    with torch.no_grad():
        hs = rm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    assert torch.allclose(got[0, 12], hs[13][0, -1], atol=1e-5)
    with torch.no_grad(), rm.model.disable_adapter():
        plain = rm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    assert not torch.allclose(got[0, 12], plain[13][0, -1], atol=1e-4)  # the LoRA is active


def test_token_norms_are_the_mean_per_token_norm_of_each_window(base):
    """The steering base coefficient's norm (issue 19): mean over the window of ‖h_t‖, per example."""
    ids = base.encode(PROMPTS)
    examples = [Example("pos", i, i, row, prompt_len=len(row) - 4) for i, row in enumerate(ids)]
    pos = Position.parse("all[:]")
    norms: dict = {}
    means = capture_means(base, examples, pos, "residual", batch_size=2, token_norms=norms)
    got = norms["per_example"]
    assert got.shape == (3, base.n_layers)
    for i, e in enumerate(examples):
        hs = _hidden_states(base, e.ids)
        for layer in (0, 10, base.n_layers - 2):
            want = hs[layer + 1][0].norm(dim=-1).mean()
            assert float(got[i, layer]) == pytest.approx(float(want), rel=1e-4), (i, layer)
            # the norm of the window mean is smaller: why it is not the base coefficient's norm
            assert float(means[i, layer].norm()) < float(got[i, layer])
