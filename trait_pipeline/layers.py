"""Where a (layer, component) lives in a model: the layer-matching rules of every stage.

Layer ``L`` is the output of decoder block ``L`` (0-based), which equals Hugging Face's
``output_hidden_states[L + 1]`` (index 0 there is the embedding output). The last block is
the exception: HF stores its output *after* the final norm, we keep it before
(:data:`LAYER_CONVENTION`).

The decoder blocks are discovered, not looked up: the longest ``nn.ModuleList`` of
identical blocks under the language model, so an architecture nobody listed still works.
Components (``attn_out``, ``mlp_out``, ...) need an explicit table per family, because
their module names differ (GPT-2's ``attn.c_proj``, GPT-NeoX's ``attention.dense``) and a
wrong guess would capture the wrong tensor silently. A component a family does not have
(``k_proj`` where q, k and v are one fused projection) fails in one line naming both.

>>> # decoder_layers(model)[10]                      -> the 11th decoder block
>>> # component_module(model, 10, "mlp_out")         -> that block's mlp.down_proj
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from torch import nn

from .errors import PipelineError

LAYER_CONVENTION = ("output of decoder block L (0-based) = hidden_states[L+1]"
                    " (for the last block: before the final norm HF applies there)")

COMPONENTS = ("residual", "attn_out", "mlp_out", "k_proj", "v_proj",
              "attn_contribution", "mlp_contribution")


@dataclass(frozen=True)
class BlockParts:
    """Module paths inside one decoder block, per component (None = the family has none).

    ``*_contribution`` is what the sub-layer adds to the residual stream: the projection
    output in pre-norm blocks, the post-norm output in sandwich/post-norm blocks (Gemma-2/3,
    OLMo-2). ``missing`` says why a component is absent, for the error message.
    """

    attn_out: str | None = "self_attn.o_proj"
    mlp_out: str | None = "mlp.down_proj"
    k_proj: str | None = "self_attn.k_proj"
    v_proj: str | None = "self_attn.v_proj"
    attn_contribution: str | None = "self_attn.o_proj"
    mlp_contribution: str | None = "mlp.down_proj"
    missing: str = ""

    def path(self, component: str) -> str | None:
        return "" if component == "residual" else getattr(self, component)


_LLAMA = BlockParts()  # Llama, Mistral, Qwen2/3: pre-norm, separate q/k/v projections
# Gemma-2/3: sandwich norms; OLMo-2: post-norms only. The sub-layer's real contribution is
# the post-norm output, not the projection's.
_POSTNORM = BlockParts(attn_contribution="post_attention_layernorm",
                       mlp_contribution="post_feedforward_layernorm")
# MoE blocks: the routed sum of the experts is the MLP's output; no single down_proj
_MOE = BlockParts(mlp_out="mlp", mlp_contribution="mlp")
_FUSED = "its attention computes q, k and v in one fused projection ({})"
ARCHITECTURES: dict[str, BlockParts] = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA,
    "gemma": _LLAMA, "gemma2": _POSTNORM, "gemma3_text": _POSTNORM, "gemma3": _POSTNORM,
    "olmo2": _POSTNORM,
    "phi3": BlockParts(k_proj=None, v_proj=None, missing=_FUSED.format("self_attn.qkv_proj")),
    "gpt2": BlockParts(attn_out="attn.c_proj", mlp_out="mlp.c_proj", k_proj=None, v_proj=None,
                       attn_contribution="attn.c_proj", mlp_contribution="mlp.c_proj",
                       missing=_FUSED.format("attn.c_attn")),
    "gpt_neox": BlockParts(attn_out="attention.dense", mlp_out="mlp.dense_4h_to_h", k_proj=None,
                           v_proj=None, attn_contribution="attention.dense",
                           mlp_contribution="mlp.dense_4h_to_h",
                           missing=_FUSED.format("attention.query_key_value")),
    "qwen3_moe": _MOE, "mixtral": _MOE,
}
FINAL_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "final_norm")


def _unwrap(model: nn.Module) -> nn.Module:
    """The causal LM under a peft wrapper, if any."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def model_type(model: nn.Module) -> str:
    """The HF ``config.model_type`` (``llama``, ``gpt2``...), or the class name without one."""
    lm = _unwrap(model)
    return str(getattr(getattr(lm, "config", None), "model_type", None) or type(lm).__name__)


def _decoder(lm: nn.Module) -> nn.Module:
    """The text decoder under a causal LM (skips vision towers of multimodal models)."""
    get = getattr(lm, "get_decoder", None)
    try:
        dec = get() if callable(get) else None
    except (AttributeError, NotImplementedError, TypeError):
        dec = None
    return dec if isinstance(dec, nn.Module) else lm


_BLOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _find_blocks(root: nn.Module) -> nn.ModuleList | None:
    """The longest ModuleList of same-class blocks that is not nested in another one's block
    (so a MoE's list of experts never wins over the list of layers)."""
    best: nn.ModuleList | None = None
    inside: set[int] = set()  # ids of modules under a candidate's blocks
    for _name, mod in root.named_modules():
        if id(mod) in inside or not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if len({type(b) for b in mod}) != 1:
            continue
        inside.update(id(m) for m in mod.modules() if m is not mod)
        if best is None or len(mod) > len(best):
            best = mod
    return best


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM (plain, peft-wrapped, or multimodal Gemma-3)."""
    lm = _unwrap(model)
    blocks = _BLOCKS.get(lm)
    if blocks is None:
        blocks = _find_blocks(_decoder(lm)) or _find_blocks(lm)
        if blocks is None:
            raise PipelineError(f"cannot find the decoder layers of {type(lm).__name__}: "
                                "no list of identical blocks in the model")
        _BLOCKS[lm] = blocks
    return blocks


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def check_layers(model: nn.Module, layers: list[int]) -> list[int]:
    n = num_layers(model)
    bad = [la for la in layers if not 0 <= int(la) < n]
    if bad:
        raise PipelineError(f"layer {bad[0]} out of range: the model has layers 0..{n - 1}")
    return [int(la) for la in layers]


def block_parts(model: nn.Module) -> BlockParts:
    """The component table of ``model``'s family; unlisted families get the Llama names,
    with post-norm contributions when the block has a ``post_feedforward_layernorm``."""
    kind = model_type(model)
    if kind in ARCHITECTURES:
        return ARCHITECTURES[kind]
    block = decoder_layers(model)[0]
    mlp = getattr(block, "mlp", None)
    moe = mlp is not None and not hasattr(mlp, "down_proj") and hasattr(mlp, "experts")
    post = hasattr(block, "post_feedforward_layernorm")
    return BlockParts(
        mlp_out="mlp" if moe else "mlp.down_proj",
        attn_contribution="post_attention_layernorm" if post else "self_attn.o_proj",
        mlp_contribution="post_feedforward_layernorm" if post else ("mlp" if moe else "mlp.down_proj"),
    )


def _check_component(component: str) -> None:
    if component not in COMPONENTS:
        raise PipelineError(
            f"unknown component {component!r}; expected one of: {', '.join(COMPONENTS)}"
        )


def component_module(model: nn.Module, layer: int, component: str) -> nn.Module:
    """The module whose output is ``component`` at ``layer``."""
    _check_component(component)
    layer = check_layers(model, [layer])[0]
    return _in_block(model, decoder_layers(model)[layer], component)


def component_modules(model: nn.Module, layers: list[int], component: str) -> list[nn.Module]:
    """:func:`component_module` for many layers, finding the decoder blocks once.

    Hooking all 24-80 layers of a model happens on every capture call; per-layer lookups
    were half of the hooks' cost on small models (bench/bench_capture.py).
    """
    _check_component(component)
    blocks = decoder_layers(model)
    return [_in_block(model, blocks[la], component) for la in check_layers(model, list(layers))]


def _in_block(model: nn.Module, block: nn.Module, component: str) -> nn.Module:
    parts = block_parts(model)
    path = parts.path(component)
    where = f"{model_type(model)} ({type(_unwrap(model)).__name__})"
    if path is None:
        ok = [c for c in COMPONENTS if parts.path(c) is not None]
        raise PipelineError(f"component {component!r} is not available for {where}: "
                            f"{parts.missing}; use one of: {', '.join(ok)}")
    node = block
    for part in filter(None, path.split(".")):
        node = getattr(node, part, None)
        if node is None:
            raise PipelineError(f"component {component!r} not found for {where}: its "
                                f"{type(block).__name__} has no {path}")
    return node


def final_norm_and_unembed(model: nn.Module) -> tuple[nn.Module | None, nn.Module]:
    """The final norm and the unembedding (``lm_head``), for the logit lens."""
    lm = _unwrap(model)
    dec = _decoder(lm)
    norm = None
    for name in FINAL_NORM_NAMES:
        norm = getattr(dec, name, None)
        if isinstance(norm, nn.Module):
            break
        norm = None
    return norm, lm.get_output_embeddings()


def output_tensor(output):
    """A module's output as a tensor (decoder blocks may return tuples)."""
    return output[0] if isinstance(output, tuple) else output
