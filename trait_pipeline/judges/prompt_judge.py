"""What the model-based judges share: prompts, the score pipeline and the on-disk cache.

A subclass says how to get a first-token score (:class:`RawScore`) and a short text verdict
for a batch of chat prompts; this class turns the four judge questions (trait, coherence,
scenario vetting, response vetting) into those prompts, serves repeats from the cache,
applies the probability-mass threshold and the coherence relevance cap.

>>> # class MyJudge(PromptJudge):
>>> #     kind = "mine"
>>> #     def _score_uncached(self, prompts): ...   # -> list[RawScore | None]
>>> #     def _verdict_uncached(self, prompts): ... # -> list[str | None]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from . import prompts as P
from .cache import JudgeCache
from .scoring import RawScore, capped, relevance_cap
from .settings import MinMass
from .spec import TraitSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


class PromptJudge:
    """Base of the OpenAI-compatible and local Hugging Face judges."""

    kind: str = "?"
    model: str = "?"
    verdict_tokens: int = 3  # the relevance verdict is one word; a few tokens read it

    def __init__(self, min_mass: MinMass, cache: JudgeCache | None) -> None:
        self.min_mass = min_mass
        self.cache = cache
        self.failed_requests = 0          # requests that failed for good (outage, 5xx ...)
        self.last_error: str | None = None

    def note_failures(self, count: int, last: str) -> None:
        """Record requests that got no answer, so a stage can tell an outage from a low score."""
        from ..safety.secrets import redact

        self.failed_requests += count
        self.last_error = redact(last)

    # what a subclass provides ------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        """What makes this judge's answers differ from another's (part of the cache key)."""
        return {"kind": self.kind, "model": self.model}

    def _score_params(self) -> dict[str, Any]:
        return {}

    def _score_uncached(self, prompts: list[P.Messages]) -> list[RawScore | None]:
        raise NotImplementedError

    def _verdict_uncached(self, prompts: list[P.Messages]) -> list[str | None]:
        raise NotImplementedError

    # the Judge interface -------------------------------------------------------------------
    def check_trait(self, trait: TraitSpec) -> None:
        """Model-based judges can judge any trait that has a definition."""

    def describe(self) -> dict[str, Any]:
        """What a result records about its judge (never a secret)."""
        return {"kind": self.kind, "model": self.model, "method": "logprob"}

    def score_trait(self, trait: TraitSpec, items: list[tuple[str, str]]) -> list[float | None]:
        prompts = [P.trait_messages(trait, q, a) for q, a in items]
        return self._scores(prompts, self.min_mass.trait)

    def score_coherence(self, items: list[tuple[str, str]]) -> list[float | None]:
        """Fluency score, then capped when the answer dodges the question (50) or ignores it (30)."""
        grammar = self._scores([P.coherence_messages(q, a) for q, a in items], self.min_mass.coherence)
        scored = [i for i, s in enumerate(grammar) if s is not None]
        verdicts = self._verdicts([P.relevance_messages(*items[i]) for i in scored])
        out = list(grammar)
        for i, verdict in zip(scored, verdicts):
            out[i] = capped(grammar[i], relevance_cap(verdict))
        return out

    def score_bias(self, items: list[tuple[str, str, str]]) -> list[float | None]:
        """(question, answer, bias description) -> how much the answer exploits that bias, 0..100."""
        return self._scores([P.bias_messages(q, a, b) for q, a, b in items], self.min_mass.trait)

    def score_scenarios(self, trait: TraitSpec, scenarios: list[str]) -> list[float | None]:
        return self._scores([P.scenario_messages(trait, s) for s in scenarios], self.min_mass.trait)

    def score_responses(self, trait: TraitSpec, items: list[tuple[str, str]]) -> list[float | None]:
        prompts = [P.response_messages(trait, prefix, resp) for prefix, resp in items]
        return self._scores(prompts, self.min_mass.trait)

    # cache plumbing --------------------------------------------------------------------------
    def _scores(self, prompts: list[P.Messages], min_mass: float) -> list[float | None]:
        raws = self._through_cache(
            prompts, "score", self._score_uncached,
            to_json=lambda r: {"score": r.score, "mass": r.mass},
            from_json=lambda d: RawScore(d.get("score"), float(d.get("mass", 0.0))),
        )
        return [None if r is None else r.accept(min_mass) for r in raws]

    def _verdicts(self, prompts: list[P.Messages]) -> list[str | None]:
        return self._through_cache(
            prompts, "verdict", self._verdict_uncached,
            to_json=lambda v: {"text": v}, from_json=lambda d: d.get("text"),
        )

    def _through_cache(
        self,
        prompts: list[P.Messages],
        purpose: str,
        compute: Callable[[list[P.Messages]], Sequence[T | None]],
        to_json: Callable[[T], dict],
        from_json: Callable[[dict], T],
    ) -> list[T | None]:
        """Answer from the cache where possible; send each distinct missing prompt once."""
        if not prompts:
            return []
        results: list[T | None] = [None] * len(prompts)
        params = {**self._score_params(), "purpose": purpose}
        if purpose == "verdict":
            params["max_tokens"] = self.verdict_tokens
        keys = [JudgeCache.key({**self._identity(), "params": params, "messages": m}) for m in prompts]
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                results[i] = from_json(hit)
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            fresh = compute([prompts[rows[0]] for rows in todo.values()])
            for (key, rows), value in zip(todo.items(), fresh):
                for i in rows:
                    results[i] = value
                # failed requests (None) are not stored: the next run asks again
                if value is not None and self.cache is not None:
                    self.cache.put(key, to_json(value))
        hits = len(prompts) - sum(len(rows) for rows in todo.values())
        if hits:
            log.info("judge %s: %d of %d %s requests answered from the cache",
                     self.model, hits, len(prompts), purpose)
        return results
