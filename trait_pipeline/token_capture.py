"""Per-token activations of every layer, for prompt and response tokens, while generating.

Generation runs its own decode loop over a KV cache so that every token passes through the
model exactly once: one prefill pass over the left-padded prompts records the prompt
positions, each decode step records the token it feeds, and one last step feeds the final
generated token, which a plain ``generate`` never runs through the model (the original's
off-by-one). So ``response`` has exactly one row per response token, in token order.

>>> # seqs = capture_generate(lm, [lm.encode([lm.format_prompt("how is the game going ?")])[0]],
>>> #                        components=["residual"], max_new_tokens=8)
>>> # seqs[0].response["residual"].shape    # [len(seqs[0].response_ids), n_layers, hidden]

:func:`capture_replay` records the same tensors for given token ids (another variant's
response) in one forward pass: the model diff path. Rows are the output of decoder block L
(``layers.LAYER_CONVENTION``); tensors come back on the CPU in the model's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .capture import record
from .errors import PipelineError
from .generation import response_text
from .models import LoadedModel


@dataclass
class CapturedSequence:
    """One prompt's tokens and activations: ``{component: [n_tokens, n_layers, dim]}``."""

    prompt_ids: list[int]
    response_ids: list[int]  # up to and including EOS when it was produced
    response_text: str
    prompt: dict[str, torch.Tensor]
    response: dict[str, torch.Tensor]


def _positions(mask: torch.Tensor) -> torch.Tensor:
    # left padding: each row counts its own positions from its first real token
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _stack_layers(step: dict, comp: str, layers: Sequence[int]) -> torch.Tensor:
    """``{(comp, L): [B, T, d]}`` -> ``[B, T, len(layers), d]`` on the CPU."""
    return torch.stack([step[(comp, la)] for la in layers], dim=2)


def _layer_list(lm: LoadedModel, layers: Sequence[int] | None) -> list[int]:
    from .layers import check_layers

    return list(range(lm.n_layers)) if layers is None else check_layers(lm.model, list(layers))


def _eos_ids(lm: LoadedModel) -> set[int]:
    ids = {lm.tokenizer.eos_token_id}
    cfg_eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    ids |= set(cfg_eos) if isinstance(cfg_eos, (list, tuple)) else {cfg_eos}
    return {i for i in ids if i is not None}


def capture_generate(
    lm: LoadedModel,
    prompt_ids: Sequence[list[int]],
    components: Sequence[str] = ("residual",),
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    seed: int = 0,
    layers: Sequence[int] | None = None,
) -> list[CapturedSequence]:
    """Generate for one batch of tokenized prompts and record ``layers`` (default: every
    layer, in order) at every token; row ``k`` of the layer axis is ``layers[k]``.

    Greedy at temperature 0, otherwise sampled with a generator seeded by ``seed``.
    """
    if max_new_tokens < 1:
        raise PipelineError(f"bad max_new_tokens {max_new_tokens}: expected an int >= 1")
    layer_ids, comps = _layer_list(lm, layers), list(components)
    batch = lm.pad_batch(list(prompt_ids))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    bsz, width = ids.shape
    eos = _eos_ids(lm)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else min(eos, default=0)
    gen = torch.Generator(device=ids.device).manual_seed(seed) if temperature > 0 else None

    step: dict = {}

    def keep(key, out):  # one forward pass = one entry per (component, layer)
        step[key] = out.to("cpu")

    new_tokens: list[torch.Tensor] = []  # [B] per step
    response_rows: list[dict[str, torch.Tensor]] = []  # per fed token: {comp: [B, L, d]}
    done = torch.zeros(bsz, dtype=torch.bool, device=ids.device)
    with torch.no_grad(), record(lm.model, layer_ids, comps, on_output=keep):
        out = lm.model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask),
                       use_cache=True, logits_to_keep=1)
        prompt_acts = {c: _stack_layers(step, c, layer_ids) for c in comps}
        cache_kw = _cache_kwarg(lm.model)
        cache = _cache_of(out)
        logits = out.logits[:, -1, :]
        for _ in range(max_new_tokens):
            nxt = _next_token(logits, temperature, gen)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            new_tokens.append(nxt)
            done = done | torch.isin(nxt, torch.tensor(sorted(eos), device=nxt.device))
            # feed it: records its activations (the last one too) and gives the next logits
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            step.clear()
            out = lm.model(input_ids=nxt[:, None], attention_mask=mask,
                           position_ids=_positions(mask)[:, -1:], use_cache=True,
                           **{cache_kw: cache})
            cache = _cache_of(out)
            logits = out.logits[:, -1, :]
            response_rows.append({c: _stack_layers(step, c, layer_ids)[:, 0] for c in comps})
            if bool(done.all()):
                break

    steps = torch.stack(new_tokens, dim=1).tolist() if new_tokens else [[] for _ in range(bsz)]
    results = []
    for b in range(bsz):
        p_ids = list(prompt_ids[b])
        r_ids = _until_eos(steps[b], eos)
        n_p, n_r = len(p_ids), len(r_ids)
        results.append(CapturedSequence(
            prompt_ids=p_ids, response_ids=r_ids,
            response_text=response_text(lm.tokenizer, p_ids, r_ids),
            prompt={c: prompt_acts[c][b, width - n_p:].clone() for c in comps},
            response={
                c: (torch.stack([row[c][b] for row in response_rows[:n_r]]) if n_r
                    else prompt_acts[c].new_zeros((0, *prompt_acts[c].shape[2:])))
                for c in comps
            },
        ))
    return results


def capture_replay(
    lm: LoadedModel,
    prompt_ids: Sequence[list[int]],
    response_ids: Sequence[list[int]],
    components: Sequence[str] = ("residual",),
    layers: Sequence[int] | None = None,
) -> list[CapturedSequence]:
    """Record ``layers`` (default all) over given prompt+response ids in one forward pass."""
    layer_ids, comps = _layer_list(lm, layers), list(components)
    rows = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    batch = lm.pad_batch(rows)
    width = batch["input_ids"].shape[1]
    step: dict = {}
    with torch.no_grad(), record(lm.model, layer_ids, comps,
                                 on_output=lambda k, o: step.__setitem__(k, o.to("cpu"))):
        lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 position_ids=_positions(batch["attention_mask"]), use_cache=False,
                 logits_to_keep=1)
    acts = {c: _stack_layers(step, c, layer_ids) for c in comps}
    results = []
    for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        start, cut = width - len(p) - len(r), width - len(r)
        results.append(CapturedSequence(
            prompt_ids=list(p), response_ids=list(r),
            response_text=response_text(lm.tokenizer, list(p), list(r)),
            prompt={c: acts[c][b, start:cut].clone() for c in comps},
            response={c: acts[c][b, cut:].clone() for c in comps},
        ))
    return results


def _cache_kwarg(model) -> str:
    """transformers v5 calls the KV cache ``cache``; older models still say ``past_key_values``."""
    import inspect

    from .layers import _unwrap

    params = inspect.signature(_unwrap(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _next_token(logits: torch.Tensor, temperature: float, gen: torch.Generator | None) -> torch.Tensor:
    if temperature and temperature > 0:
        probs = torch.softmax(logits.float() / float(temperature), dim=-1)
        return torch.multinomial(probs, 1, generator=gen)[:, 0]
    return logits.argmax(dim=-1)


def _until_eos(row: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(row):
        if t in eos:
            return row[: i + 1]
    return row


@dataclass
class StreamStep:
    """One step of :func:`stream_capture`: the prompt (``token_id`` None) or one new token.

    ``acts`` is ``{component: [n_tokens, len(layers), dim]}`` on the CPU: all prompt tokens
    for the first step, then one row per generated token.
    """

    token_id: int | None
    acts: dict[str, torch.Tensor]
    is_eos: bool = False


def stream_capture(
    lm: LoadedModel,
    prompt_ids: list[int],
    layers: Sequence[int],
    components: Sequence[str] = ("residual",),
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    seed: int = 0,
    min_new_tokens: int = 0,
    should_stop=None,
):
    """:func:`capture_generate` for one prompt, yielding as it goes (the live chat).

    The same decode loop (prefill, then every generated token fed back once, the last one
    included), but only ``layers`` are recorded and each token is yielded when its
    activations exist, so a caller can stream it. ``should_stop()`` is checked before each
    forward pass; when it returns True the generator ends (a client went away).
    ``min_new_tokens`` keeps EOS from being chosen before that many tokens (as in HF ``generate``).

    >>> # for step in stream_capture(lm, ids, layers=[10], max_new_tokens=8): ...
    """
    if max_new_tokens < 1:
        raise PipelineError(f"bad max_new_tokens {max_new_tokens}: expected an int >= 1")
    layers, comps = [int(la) for la in layers], list(components)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=lm.device)
    mask = torch.ones_like(ids)
    eos = _eos_ids(lm)
    gen = torch.Generator(device=ids.device).manual_seed(seed) if temperature > 0 else None
    step: dict = {}

    def keep(key, out):
        step[key] = out.to("cpu")

    def rows() -> dict[str, torch.Tensor]:  # [T, len(layers), d] from the last forward pass
        return {c: torch.stack([step[(c, la)][0] for la in layers], dim=1) for c in comps}

    with torch.no_grad(), record(lm.model, layers, comps, on_output=keep):
        out = lm.model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask),
                       use_cache=True, logits_to_keep=1)
        yield StreamStep(None, rows())
        cache_kw, cache = _cache_kwarg(lm.model), _cache_of(out)
        logits = out.logits[:, -1, :]
        for i in range(max_new_tokens):
            if should_stop is not None and should_stop():
                return
            if i < min_new_tokens and eos:
                logits = logits.clone()
                logits[:, sorted(eos)] = float("-inf")
            nxt = _next_token(logits, temperature, gen)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            step.clear()
            out = lm.model(input_ids=nxt[:, None], attention_mask=mask,
                           position_ids=_positions(mask)[:, -1:], use_cache=True,
                           **{cache_kw: cache})
            cache, logits = _cache_of(out), out.logits[:, -1, :]
            token = int(nxt[0])
            yield StreamStep(token, rows(), is_eos=token in eos)
            if token in eos:
                return
