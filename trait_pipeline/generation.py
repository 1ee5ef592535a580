"""Batched generation with left padding, exact token boundaries and halve-on-OOM batching.

>>> # outs = generate(lm, ["how is the project going ?"], max_new_tokens=16)
>>> # outs[0].response_text, outs[0].prompt_ids, outs[0].response_ids

The response text is the decoded new tokens, *not stripped*: ``prompt_text + response_text``
re-tokenizes to ``prompt_ids + response_ids`` (the original lost the joining space).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from .errors import PipelineError
from .models import LoadedModel

log = logging.getLogger(__name__)

CPU_BATCH_SIZE = 32
MAX_BATCH_SIZE = 128


@dataclass
class Generation:
    prompt_text: str  # the formatted prompt (template applied)
    prompt_ids: list[int]
    response_ids: list[int]  # new tokens up to and including EOS if it was produced
    response_text: str  # decoded new tokens without special tokens, not stripped


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def auto_batch_size(lm: LoadedModel, seq_len: int, generating: bool = True) -> int:
    """A first guess from free GPU memory (KV cache + logits per sequence); OOM halves it."""
    if lm.device.type != "cuda":
        return CPU_BATCH_SIZE
    cfg = getattr(lm.model, "config", None)
    free, _ = torch.cuda.mem_get_info(lm.device)
    layers = lm.n_layers
    hidden = getattr(cfg, "hidden_size", 4096)
    heads = getattr(cfg, "num_attention_heads", 32)
    kv_heads = getattr(cfg, "num_key_value_heads", heads) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    elt = torch.finfo(next(lm.model.parameters()).dtype).bits // 8
    per_seq = 2 * kv_heads * head_dim * seq_len * layers * elt + 8 * hidden * seq_len * elt
    if generating:
        per_seq += seq_len * getattr(cfg, "vocab_size", 32000) * 4
        per_seq = int(per_seq * 1.5)
    return int(max(1, min(MAX_BATCH_SIZE, (free * 0.9) // max(per_seq, 1))))


def batched(
    n_items: int,
    run: Callable[[int, int], None],
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Call ``run(start, end)`` over ``[0, n_items)`` in chunks; halve and retry on OOM.

    Returns the batch size that worked (use it for the next call).
    """
    start = 0
    while start < n_items:
        end = min(start + batch_size, n_items)
        try:
            run(start, end)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not is_oom(exc):
                raise
            if batch_size == 1:
                raise PipelineError("out of memory even at batch size 1") from None
            batch_size = max(1, batch_size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("out of memory; retrying with batch size %d", batch_size)
            continue
        if progress is not None:
            progress(end - start)
        start = end
    return batch_size


def resolve_batch_size(lm: LoadedModel, setting, seq_len: int) -> int:
    if setting in (None, "auto"):
        return auto_batch_size(lm, seq_len)
    try:
        size = int(setting)
    except (TypeError, ValueError):
        raise PipelineError(f"bad batch_size {setting!r}: expected auto or a positive int") from None
    if size < 1:
        raise PipelineError(f"bad batch_size {setting!r}: expected auto or a positive int")
    return size


def generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    batch_size: int | str = "auto",
    seed: int = 0,
    formatted: bool = False,
    system_prompts: Sequence[str | None] | None = None,
    batch_context: Callable[[int, int], AbstractContextManager] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Generate a response per prompt (greedy at temperature 0).

    ``batch_context(start, end)`` is entered around each sub-batch, with the row range of
    the *whole* prompt list it covers, so per-row interventions (batched steering) stay
    aligned when OOM or the batch size splits the list.
    """
    texts = list(prompts) if formatted else [
        lm.format_prompt(p, (system_prompts or [None] * len(prompts))[i]) for i, p in enumerate(prompts)
    ]
    ids = lm.encode(texts)
    results: list[Generation | None] = [None] * len(texts)
    tok = lm.tokenizer
    eos = tok.eos_token_id
    size = resolve_batch_size(lm, batch_size, max(len(r) for r in ids) + max_new_tokens) if ids else 1

    def run(start: int, end: int) -> None:
        batch = lm.pad_batch(ids[start:end])
        ctx = batch_context(start, end) if batch_context else nullcontext()
        gen_kwargs = {
            "max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id, "eos_token_id": eos,
        }
        if temperature and temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
            torch.manual_seed(seed + start)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with ctx, torch.no_grad():
            out = lm.model.generate(**batch, **gen_kwargs)
        width = batch["input_ids"].shape[1]
        for i, row in enumerate(out[:, width:].tolist()):
            new = _trim(row, eos, tok.pad_token_id)
            results[start + i] = Generation(
                prompt_text=texts[start + i], prompt_ids=ids[start + i], response_ids=new,
                response_text=response_text(tok, ids[start + i], new),
            )

    batched(len(texts), run, size, progress)
    return [r for r in results if r is not None]


def response_text(tok, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text the new tokens add to the prompt, leading space included.

    Decoding the new tokens alone can drop a leading space (sentencepiece-style decoders
    do), so decode prompt+response and cut the decoded prompt off the front.
    """
    body = [t for t in new_ids if t not in (tok.eos_token_id, tok.pad_token_id)]
    full = tok.decode(list(prompt_ids) + body)
    head = tok.decode(list(prompt_ids))
    if full.startswith(head):
        return full[len(head):]
    return tok.decode(body, skip_special_tokens=True)


def _trim(row: list[int], eos: int | None, pad: int | None) -> list[int]:
    """New tokens up to and including the first EOS; trailing padding removed."""
    if eos is not None and eos in row:
        return row[: row.index(eos) + 1]
    while row and pad is not None and pad != eos and row[-1] == pad:
        row = row[:-1]
    return row


def chunks(seq: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i: i + size]
