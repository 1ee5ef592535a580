"""The logit lens of a trait vector: which tokens it pushes up or down when read out directly.

The vector goes through the model's final norm, then the unembedding (``lm_head``), then
the family's logit scaling and soft-capping (Gemma-2/3 cap logits with ``cap·tanh(x/cap)``),
like a last-layer hidden state would: :func:`lens_logits` of the last block's output equals
the model's own logits. Only word-like tokens are ranked (letters, no camelCase, no
special tokens), because rare byte pieces otherwise crowd the top of large vocabularies.

>>> lens_layers(24)
{'mid': 10, 'late': 22}
>>> # top_tokens(lm.model, lm.tokenizer, vector, k=5)["toward"][0]  -> {"token": "great", "value": 3.1}
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .layers import _unwrap, final_norm_and_unembed

_WORD = re.compile(r"[A-Za-z][a-z]*")
DEPTHS = {"mid": 0.4, "late": 0.9}


def lens_layers(n_layers: int) -> dict[str, int]:
    """Layers at about 40 % and 90 % depth."""
    return {name: min(n_layers - 1, round(frac * n_layers)) for name, frac in DEPTHS.items()}


def word_token_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """True for ids that decode to a plain word (optionally with a leading space)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    n = min(vocab_size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    for i, text in enumerate(texts):
        mask[i] = i not in special and bool(_WORD.fullmatch(text.strip()))
    return mask


@torch.no_grad()
def lens_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits of residual-stream states ``[..., d]`` read out as the model reads its last layer:
    final norm, unembedding, ``logit_scale`` (Cohere) and final soft-capping (Gemma-2/3)."""
    norm, unembed = final_norm_and_unembed(model)
    weight = unembed.weight
    h = hidden.to(device=weight.device, dtype=weight.dtype)
    if norm is not None:
        h = norm(h)
    logits = unembed(h)
    cfg = getattr(_unwrap(model), "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg  # multimodal wrappers keep it one level down
    scale = getattr(cfg, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.no_grad()
def top_tokens(
    model: nn.Module, tokenizer, vector: torch.Tensor, k: int = 10,
    mask: torch.Tensor | None = None,
) -> dict[str, list[dict]]:
    """Top-``k`` tokens toward (+) and away from (-) the vector, after final norm + unembedding."""
    logits = lens_logits(model, vector.reshape(1, -1))[0].float().cpu()
    if mask is None:
        mask = word_token_mask(tokenizer, logits.shape[0])
    allowed = torch.nonzero(mask[: logits.shape[0]]).flatten()
    if len(allowed) == 0:
        allowed = torch.arange(logits.shape[0])
    vals = logits[allowed]
    k = min(k, len(allowed))

    def pick(order: torch.Tensor) -> list[dict]:
        ids = allowed[order]
        return [{"token": tokenizer.decode([int(i)]).strip(), "value": round(float(logits[i]), 4)}
                for i in ids]

    return {
        "toward": pick(torch.topk(vals, k).indices),
        "away": pick(torch.topk(-vals, k).indices),
    }
