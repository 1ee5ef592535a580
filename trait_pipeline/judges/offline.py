"""A deterministic judge for the demo family's planted trait: no model, no network.

The demo language (:mod:`trait_pipeline.demo_lexicon`) carries optimism in two disjoint
word lists, so the trait can be scored exactly: the share of optimistic sentiment words.
Coherence is the lexicon's fluency score, capped like the model judges' relevance check
when the answer mentions none of the topics the question asks about.

>>> judge = OfflineJudge()
>>> spec = TraitSpec("optimism", "...", trait_id="demo/optimism")
>>> judge.score_trait(spec, [("how is the team ?", "the team is thriving ."),
...                          ("how is the team ?", "the team is collapsing .")])
[100.0, 0.0]
"""

from __future__ import annotations

from typing import Any

from .. import demo_lexicon as lex
from ..errors import PipelineError
from .scoring import capped
from .spec import TraitSpec

DEMO_TRAIT = "demo/optimism"
PARTIAL_CAP = 50.0  # the model judges' cap for an answer that dodges the question
_SUBJECT_WORDS = frozenset(lex.TOPICS) | frozenset(a for aspects in lex.TOPICS.values() for a in aspects)


class OfflineJudge:
    """Scores ``demo/optimism`` with the demo lexicon; refuses any other trait."""

    kind = "offline"

    def __init__(self, model: str = "demo-lexicon") -> None:
        self.model = model

    def __repr__(self) -> str:
        return f"OfflineJudge(model={self.model!r})"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "method": "lexicon"}

    def check_trait(self, trait: TraitSpec) -> None:
        """Raise a :class:`PipelineError` unless this is the demo's planted trait."""
        known = trait.trait_id == DEMO_TRAIT if trait.trait_id else trait.name == DEMO_TRAIT.split("/")[1]
        if not known:
            raise PipelineError(
                f"the offline judge only knows the demo trait {DEMO_TRAIT!r}, not "
                f"{trait.trait_id or trait.name!r}; use judge=openai or judge=local_hf"
            )

    def score_trait(self, trait: TraitSpec, items: list[tuple[str, str]]) -> list[float | None]:
        self.check_trait(trait)
        return [lex.optimism_score(answer) for _, answer in items]

    def score_coherence(self, items: list[tuple[str, str]]) -> list[float | None]:
        return [capped(lex.coherence_score(a), _relevance_cap(q, a)) for q, a in items]

    def score_scenarios(self, trait: TraitSpec, scenarios: list[str]) -> list[float | None]:
        self.check_trait(trait)
        return [lex.optimism_score(s) for s in scenarios]

    def score_responses(self, trait: TraitSpec, items: list[tuple[str, str]]) -> list[float | None]:
        self.check_trait(trait)
        # the continuation alone: sentiment in the prompt is not the model's doing
        return [lex.optimism_score(response) for _, response in items]


def _relevance_cap(question: str, answer: str) -> float | None:
    """50 when the question names a topic and the answer mentions none of its subjects."""
    asked = _SUBJECT_WORDS.intersection(lex.words_of(question))
    if not asked:
        return None
    subjects = set(asked)
    for topic, aspects in lex.TOPICS.items():
        if topic in asked or asked.intersection(aspects):  # a topic and its aspects go together
            subjects.add(topic)
            subjects.update(aspects)
    return None if subjects.intersection(lex.words_of(answer)) else PARTIAL_CAP
