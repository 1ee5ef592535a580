"""Where a (layer, component) lives in a model: the layer-matching rules of every stage.

Layer ``L`` is the output of decoder block ``L`` (0-based), which equals Hugging Face's
``output_hidden_states[L + 1]`` (index 0 there is the embedding output).

>>> # decoder_layers(model)[10]                      -> the 11th decoder block
>>> # component_module(model, 10, "mlp_out")         -> that block's mlp.down_proj
"""

from __future__ import annotations

from torch import nn

from .errors import PipelineError

LAYER_CONVENTION = ("output of decoder block L (0-based) = hidden_states[L+1]"
                    " (for the last block: before the final norm HF applies there)")

# component -> path inside a decoder block ("" = the block itself)
_COMPONENT_PATHS = {
    "residual": "",
    "attn_out": "self_attn.o_proj",
    "mlp_out": "mlp.down_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_contribution": "self_attn.o_proj",
    "mlp_contribution": "mlp.down_proj",
}
# Gemma-2/3 "sandwich" norms: the block's real contribution is after the post-norm
_SANDWICH_PATHS = {
    "attn_contribution": "post_attention_layernorm",
    "mlp_contribution": "post_feedforward_layernorm",
}


def _unwrap(model: nn.Module) -> nn.Module:
    """The causal LM under a peft wrapper, if any."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM (plain, peft-wrapped, or multimodal Gemma-3)."""
    lm = _unwrap(model)
    for path in ("model.language_model.layers", "model.layers", "language_model.model.layers",
                 "transformer.h", "gpt_neox.layers"):
        node = lm
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList):
            return node
    raise PipelineError(f"cannot find the decoder layers of {type(lm).__name__}")


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def check_layers(model: nn.Module, layers: list[int]) -> list[int]:
    n = num_layers(model)
    bad = [la for la in layers if not 0 <= int(la) < n]
    if bad:
        raise PipelineError(f"layer {bad[0]} out of range: the model has layers 0..{n - 1}")
    return [int(la) for la in layers]


def component_module(model: nn.Module, layer: int, component: str) -> nn.Module:
    """The module whose output is ``component`` at ``layer``."""
    if component not in _COMPONENT_PATHS:
        raise PipelineError(
            f"unknown component {component!r}; expected one of: {', '.join(_COMPONENT_PATHS)}"
        )
    return _in_block(decoder_layers(model)[check_layers(model, [layer])[0]], component)


def component_modules(model: nn.Module, layers: list[int], component: str) -> list[nn.Module]:
    """:func:`component_module` for many layers, finding the decoder blocks once.

    Hooking all 24-80 layers of a model happens on every capture call; per-layer lookups
    were half of the hooks' cost on small models (bench/bench_capture.py).
    """
    if component not in _COMPONENT_PATHS:
        component_module(model, 0, component)  # raises the one-line error
    blocks = decoder_layers(model)
    return [_in_block(blocks[la], component) for la in check_layers(model, list(layers))]


def _in_block(block: nn.Module, component: str) -> nn.Module:
    path = _COMPONENT_PATHS[component]
    if component in _SANDWICH_PATHS and hasattr(block, "pre_feedforward_layernorm"):
        path = _SANDWICH_PATHS[component]
    node = block
    for part in filter(None, path.split(".")):
        node = getattr(node, part, None)
        if node is None:
            raise PipelineError(
                f"component {component!r} not found in {type(block).__name__} (looked for {path})"
            )
    return node


def final_norm_and_unembed(model: nn.Module) -> tuple[nn.Module | None, nn.Module]:
    """The final norm and the unembedding (``lm_head``), for the logit lens."""
    lm = _unwrap(model)
    inner = getattr(lm, "model", lm)
    inner = getattr(inner, "language_model", inner)
    norm = getattr(inner, "norm", None) or getattr(inner, "final_layernorm", None)
    return norm, lm.get_output_embeddings()


def output_tensor(output):
    """A module's output as a tensor (decoder blocks may return tuples)."""
    return output[0] if isinstance(output, tuple) else output
