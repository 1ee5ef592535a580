"""Turning a judge's first-token distribution into a 0-100 score.

The judge is asked for one integer 0-100. Rather than read the one token it would emit, we
take the probability-weighted mean over every candidate token that *is* such an integer,
renormalised by their total probability (the "mass"). A low mass means the judge wanted to
say something else (a refusal, a word): that score is unreliable and becomes None.

>>> raw = weighted_score([("80", 0.5), ("90", 0.3), ("Sure", 0.2)])
>>> round(raw.score, 6), round(raw.mass, 6)
(83.75, 0.8)
>>> raw.accept(min_mass=0.25), raw.accept(min_mass=0.9) is None
(83.75, True)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

# "0", or 1-3 digits without a leading zero: "05" and "000" are not how a judge writes a score
_INTEGER = re.compile(r"^(?:0|[1-9][0-9]{0,2})$")
# word-start markers of sentencepiece (▁) and byte-level BPE (Ġ) vocabularies
_WORD_MARKERS = "\u2581\u0120"


@dataclass(frozen=True)
class RawScore:
    """A weighted score before the mass threshold: what the on-disk cache stores."""

    score: float | None  # None when no candidate token was an integer 0-100
    mass: float  # total probability of the integer tokens, 0..1

    def accept(self, min_mass: float) -> float | None:
        """The score, or None when the integer tokens carried less than ``min_mass``."""
        if self.score is None or self.mass < min_mass or self.mass <= 0.0:
            return None
        return self.score


def integer_value(token: str) -> int | None:
    """The integer 0..100 a token spells, ignoring surrounding space and word markers.

    >>> integer_value(" 85"), integer_value("\u2581100"), integer_value("101"), integer_value("8.5")
    (85, 100, None, None)
    >>> integer_value("0"), integer_value("05"), integer_value("000")
    (0, None, None)
    """
    text = token.strip().strip(_WORD_MARKERS).strip()
    if not _INTEGER.match(text):
        return None
    value = int(text)
    return value if value <= 100 else None


def weighted_score(candidates: Iterable[tuple[str, float]]) -> RawScore:
    """``(token, probability)`` pairs -> :class:`RawScore` over the integer tokens."""
    mass = total = 0.0
    for token, prob in candidates:
        value = integer_value(token)
        if value is None or not prob > 0.0:
            continue
        mass += prob
        total += value * prob
    if mass <= 0.0:
        return RawScore(None, 0.0)
    return RawScore(total / mass, min(mass, 1.0))


def weighted_score_from_logprobs(top_logprobs: Iterable[tuple[str, float]]) -> RawScore:
    """Same as :func:`weighted_score`, from ``(token, logprob)`` pairs (the API's shape)."""
    return weighted_score((tok, math.exp(lp)) for tok, lp in top_logprobs)


# Coherence is capped when the answer does not engage with the question.
RELEVANCE_CAPS = {"ANSWERS": None, "PARTIAL": 50.0}
OFF_TOPIC_CAP = 30.0


def relevance_cap(verdict: str | None) -> float | None:
    """The coherence cap for a relevance verdict; None means no cap.

    An unreadable verdict (request failed) caps nothing: a judge error must not punish the
    answer. A readable verdict that is neither ANSWERS nor PARTIAL caps at 30.

    >>> relevance_cap("ANSWERS"), relevance_cap(" partial."), relevance_cap("IGNORES"), relevance_cap(None)
    (None, 50.0, 30.0, None)
    """
    if verdict is None or not verdict.strip():
        return None
    word = re.sub(r"[^A-Z]", "", verdict.strip().split()[0].upper())
    for label, cap in RELEVANCE_CAPS.items():
        # three letters suffice: a short max_tokens may cut the word ("ANS" + "WERS")
        if len(word) >= 3 and word[:3] == label[:3]:
            return cap
    return OFF_TOPIC_CAP


def capped(score: float | None, cap: float | None) -> float | None:
    if score is None or cap is None:
        return score
    return min(score, cap)
