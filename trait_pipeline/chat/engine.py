"""One chat answer as a sequence of events: the prompt's tokens and projections, then each
generated token with every watched trait's projection, then ``done``.

The arithmetic is the inference stage's: the decode loop of
:func:`~trait_pipeline.token_capture.stream_capture` (the streaming form of ``infer``'s
capture), vectors chosen by :func:`~trait_pipeline.best_vector.select_vector` and loaded by
:func:`~trait_pipeline.infer.load_choice`, projections by
:func:`~trait_pipeline.projection.project_tokens`. So a greedy chat turn projects exactly
as ``infer`` does on the same prompt, variant and tokens.

>>> # watches = resolve_watches(lay, exp, "instruct", [WatchSpec("demo/optimism")])
>>> # for event in answer_events(lm, [{"role": "user", "content": "how is the game going ?"}],
>>> #                            watches, max_new_tokens=8): print(event["type"])
>>> # prompt, token, token, ..., done
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ..best_vector import select_vector
from ..errors import PipelineError
from ..layout import Layout, check_trait
from .experiments import ExperimentVariants

ROLES = ("system", "user", "assistant")
CAPTURABLE = ("residual", "attn_out", "mlp_out")


@dataclass(frozen=True)
class WatchSpec:
    """A trait to watch: at its best vector, or at ``layer`` (and ``method``) by hand."""

    trait: str
    layer: int | None = None
    method: str | None = None


@dataclass(frozen=True)
class Watched:
    """A watched trait with its loaded vector and the dims cleaning drops (if any)."""

    spec: WatchSpec
    vector: object  # infer.LoadedVector
    exclude_dims: list[int] | None
    key: str = ""  # how events name it: the trait, or trait@L{layer}/{method} when repeated

    def describe(self) -> dict:
        c = self.vector.choice
        return {"key": self.key, "trait": c.trait, "layer": c.layer, "method": c.method, "component": c.component,
                "position": c.position, "model_variant": c.model_variant,
                "selection_source": c.selection_source, "selection_score": c.score,
                "selection_reason": c.reason, "clean": "massive" if self.exclude_dims is not None
                else "none", "massive_dims": self.exclude_dims}


def resolve_watches(lay: Layout, exp: ExperimentVariants, variant: str,
                    specs: Sequence[WatchSpec], clean: str = "none") -> list[Watched]:
    """Find each trait's vector (before any model loads); errors name what exists."""
    from ..infer import load_choice
    from ..monitoring.massive_dims import check_clean, find_calibration

    check_clean(clean)
    dims = None
    if clean == "massive":
        found = find_calibration(lay, variant)
        if found is None:
            raise PipelineError(
                f"clean=massive needs a massive-dims calibration of {variant!r}; run: python -m "
                f"trait_pipeline.infer model_variant={variant} massive.calibrate=true")
        dims = [int(d) for d in found[0]["dims"]]
    out = []
    for w in specs:
        check_trait(w.trait)
        choice = select_vector(lay, w.trait, extraction_variant=exp.extraction_variant,
                               application_variant=variant, layer=w.layer, method=w.method,
                               min_coherence=exp.min_coherence)
        if choice.component not in CAPTURABLE:
            raise PipelineError(f"cannot watch {w.trait!r} live: its vector is on component "
                                f"{choice.component!r}; expected one of {', '.join(CAPTURABLE)}")
        out.append(Watched(w, load_choice(lay, choice, centered=False), dims))
    repeated = {t for t in (w.trait for w in specs) if sum(x.trait == t for x in specs) > 1}
    keys = [f"{w.vector.choice.trait}@L{w.vector.choice.layer}/{w.vector.choice.method}"
            if w.spec.trait in repeated else w.spec.trait for w in out]
    if len(set(keys)) != len(keys):
        raise PipelineError(f"a trait is watched twice at the same vector: {', '.join(keys)}")
    return [Watched(w.spec, w.vector, w.exclude_dims, k) for w, k in zip(out, keys)]


def check_messages(messages: Sequence[dict]) -> list[dict]:
    """``[{role, content}]`` ending with a user turn; one-line errors otherwise."""
    if not messages:
        raise PipelineError("messages is empty: expected [{role, content}, ...] ending with a user turn")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise PipelineError(f"bad message {i}: expected {{role: {'|'.join(ROLES)}, content: str}}")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise PipelineError(f"the last message is a {out[-1]['role']!r} turn: expected a user turn")
    return out


def conversation_prompt(lm, messages: Sequence[dict]) -> str:
    """The whole conversation as the variant reads it.

    Chat variants: their chat template over every turn, with the generation prompt. Raw-text
    variants (``use_chat_template: false``): the turns joined by blank lines (a system turn
    first), so a one-turn chat reads exactly like ``infer``'s prompt (``lm.format_prompt``).
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return lm.format_prompt(messages[0]["content"])
    if lm.chat:
        return lm.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)


def _projector(watches: Sequence[Watched]):
    """Layers and components to record, and a function from captured rows to projections."""
    from ..projection import project_tokens

    layers = sorted({w.vector.choice.layer for w in watches})
    comps = sorted({w.vector.choice.component for w in watches}) or ["residual"]

    def project(acts: dict) -> dict[str, dict[str, list[float]]]:
        out = {}
        for w in watches:
            c = w.vector.choice
            p = project_tokens(acts[c.component], w.vector.vector, layers.index(c.layer),
                               exclude_dims=w.exclude_dims)
            out[w.key] = {"projections": p.projections, "token_norms": p.token_norms}
        return out

    return layers or [0], comps, project


def _token_event(index: int, token_id: int, text: str, proj: dict) -> dict:
    return {"type": "token", "index": index, "id": token_id, "text": text,
            "projections": {t: v["projections"][0] for t, v in proj.items()},
            "token_norms": {t: v["token_norms"][0] for t, v in proj.items()}}


def _prompt_event(lm, text: str, ids: list[int], proj: dict, watches) -> dict:
    return {"type": "prompt", "text": text, "token_ids": list(ids),
            "tokens": [lm.tokenizer.decode([i]) for i in ids],
            "projections": {t: v["projections"] for t, v in proj.items()},
            "token_norms": {t: v["token_norms"] for t, v in proj.items()},
            "watches": [w.describe() for w in watches], "chat_template": bool(lm.chat)}


def answer_events(
    lm, messages: Sequence[dict], watches: Sequence[Watched], *, max_new_tokens: int,
    temperature: float = 0.0, seed: int = 0, min_new_tokens: int = 0,
    should_stop: Callable[[], bool] | None = None, on_token: Callable[[], None] | None = None,
) -> Iterator[dict]:
    """Generate an answer to ``messages``, yielding ``prompt``, ``token``... and ``done``."""
    from ..generation import response_text
    from ..token_capture import _eos_ids, stream_capture

    messages = check_messages(messages)
    text = conversation_prompt(lm, messages)
    ids = lm.encode([text])[0]
    layers, comps, project = _projector(watches)
    eos = _eos_ids(lm)
    response: list[int] = []
    start = time.perf_counter()
    first = None
    reason = "max_new_tokens"
    steps = stream_capture(lm, ids, layers, comps, max_new_tokens=max_new_tokens,
                           temperature=temperature, seed=seed, min_new_tokens=min_new_tokens,
                           should_stop=should_stop)
    try:
        for step in steps:
            proj = project(step.acts)
            if step.token_id is None:
                yield _prompt_event(lm, text, ids, proj, watches)
                continue
            first = first or time.perf_counter()
            response.append(step.token_id)
            if on_token:
                on_token()
            yield _token_event(len(response) - 1, step.token_id,
                               lm.tokenizer.decode([step.token_id]), proj)
            if step.token_id in eos:
                reason = "eos"
        if should_stop is not None and should_stop() and reason != "eos":
            reason = "cancelled"
    finally:
        steps.close()  # removes the hooks even when the consumer stops early
    seconds = time.perf_counter() - start
    yield {"type": "done", "reason": reason, "n_tokens": len(response),
           "response_ids": response, "prompt_ids": list(ids),
           "response_text": response_text(lm.tokenizer, list(ids), response),
           "seconds": round(seconds, 4),
           "tokens_per_s": round(len(response) / seconds, 2) if response and seconds > 0 else None}


def replay_events(lm, messages: Sequence[dict], response_ids: Sequence[int],
                  watches: Sequence[Watched], response_text: str | None = None) -> Iterator[dict]:
    """Another variant's answer read by this one (one forward pass), as the same events, so
    the two curves align token by token. Ids are fed as they are when this tokenizer knows
    them all; otherwise ``response_text`` is re-tokenized (``tokens_identical`` says which)."""
    from ..token_capture import capture_replay

    messages = check_messages(messages)
    text = conversation_prompt(lm, messages)
    ids = lm.encode([text])[0]
    resp = [int(i) for i in response_ids]
    same = all(0 <= i < len(lm.tokenizer) for i in resp)
    if not same:
        if response_text is None:
            raise PipelineError("response_ids are outside this variant's vocabulary and no "
                                "response_text was given to re-tokenize")
        resp = lm.tokenizer(response_text, add_special_tokens=False)["input_ids"]
    if not resp:
        raise PipelineError("response_ids is empty: nothing to replay")
    layers, comps, project = _projector(watches)
    start = time.perf_counter()
    seq = capture_replay(lm, [ids], [resp], comps)[0]
    sel = {c: seq.prompt[c][:, layers] for c in comps}
    yield _prompt_event(lm, text, ids, project(sel), watches)
    proj = project({c: seq.response[c][:, layers] for c in comps})
    for i, tid in enumerate(resp):
        one = {t: {k: [v[k][i]] for k in v} for t, v in proj.items()}
        yield _token_event(i, tid, lm.tokenizer.decode([tid]), one)
    seconds = time.perf_counter() - start
    yield {"type": "done", "reason": "replay", "n_tokens": len(resp), "response_ids": resp,
           "prompt_ids": list(ids), "tokens_identical": same, "seconds": round(seconds, 4),
           "tokens_per_s": None}
