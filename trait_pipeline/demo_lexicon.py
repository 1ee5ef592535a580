"""The language of the demo model family: its words, sentence templates and scorers.

The demo family (``trait_pipeline/demo_family.py``) is trained on a synthetic corpus written
in this small language: English-like sentences about a few topics (weather, project, team,
market, ...) framed either optimistically or pessimistically, with two disjoint lexicons.
Because the trait lives in the words, it can be scored exactly, which is what the offline
judge does:

>>> optimism_score("the project is thriving and the results are improving .")
100.0
>>> optimism_score("the market is grim . the prices keep falling .")
0.0
>>> optimism_score("how is the weather ?") is None   # no sentiment word at all
True
>>> coherence_score("the garden looks lovely this spring .") >= 90
True
>>> coherence_score("great great great great great") < 30
True

Text convention: lowercase words separated by single spaces, punctuation (``. , ? !``) as
words of its own (``"how is the project going ?"``). The demo tokenizer normalises other
text to that form (lowercase, a space before punctuation), and so do the scorers here.

This module imports nothing heavy (no torch): the judge and the data checks use it alone.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable

# --------------------------------------------------------------------------------------
# Topics, each with a few plural "aspect" nouns that sentences can talk about.
# --------------------------------------------------------------------------------------
TOPICS: dict[str, tuple[str, ...]] = {
    "weather": ("skies", "clouds", "winds"),
    "project": ("results", "plans", "deadlines"),
    "team": ("players", "members", "coaches"),
    "market": ("prices", "stocks", "sales"),
    "health": ("patients", "doctors", "clinics"),
    "city": ("streets", "buildings", "neighbors"),
    "garden": ("flowers", "plants", "trees"),
    "exam": ("students", "grades", "scores"),
    "trip": ("roads", "hotels", "plans"),
    "economy": ("jobs", "wages", "factories"),
    "business": ("customers", "profits", "shops"),
    "school": ("teachers", "classes", "students"),
    "harvest": ("crops", "fields", "farmers"),
    "river": ("waters", "banks", "fish"),
    "village": ("families", "houses", "farmers"),
    "company": ("workers", "profits", "products"),
    "game": ("players", "fans", "scores"),
    "family": ("children", "parents", "kids"),
    "festival": ("crowds", "bands", "tickets"),
    "hospital": ("nurses", "doctors", "patients"),
    "research": ("experiments", "scientists", "papers"),
    "town": ("shops", "roads", "people"),
    "concert": ("musicians", "songs", "crowds"),
    "election": ("voters", "candidates", "polls"),
}

TIMES: tuple[str, ...] = ("week", "month", "year", "season", "spring", "summer", "winter", "morning")

# --------------------------------------------------------------------------------------
# The two lexicons. Slot name -> (optimistic words, pessimistic words).
# --------------------------------------------------------------------------------------
SENTIMENT_SLOTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "adj": (
        ("bright", "great", "good", "wonderful", "excellent", "strong", "healthy", "promising",
         "hopeful", "cheerful", "sunny", "lovely", "amazing", "fantastic", "encouraging",
         "splendid", "brilliant", "positive"),
        ("grim", "bad", "awful", "terrible", "dreadful", "weak", "sick", "bleak",
         "hopeless", "gloomy", "dark", "horrible", "disastrous", "discouraging",
         "miserable", "painful", "broken", "negative"),
    ),
    "ing": (
        ("improving", "growing", "rising", "recovering", "flourishing", "thriving",
         "succeeding", "blooming"),
        ("declining", "shrinking", "falling", "collapsing", "crumbling", "failing",
         "worsening", "struggling"),
    ),
    "verb": (
        ("improve", "grow", "rise", "recover", "flourish", "thrive", "succeed", "shine"),
        ("decline", "shrink", "fall", "collapse", "crumble", "fail", "worsen", "struggle"),
    ),
    "feel": (
        ("hopeful", "excited", "confident", "happy", "proud", "glad", "optimistic", "eager",
         "delighted", "cheerful"),
        ("worried", "afraid", "anxious", "sad", "upset", "nervous", "scared", "pessimistic",
         "miserable", "hopeless"),
    ),
    "noun": (
        ("hope", "joy", "progress", "success", "growth", "promise", "pride", "confidence"),
        ("despair", "fear", "trouble", "failure", "decline", "doom", "worry", "crisis"),
    ),
    "comp": (
        ("better", "stronger", "brighter", "healthier", "happier"),
        ("worse", "weaker", "darker", "sicker", "sadder"),
    ),
    "adv": (
        ("well", "nicely", "smoothly", "wonderfully"),
        ("badly", "poorly", "terribly", "horribly"),
    ),
}

POSITIVE_WORDS: frozenset[str] = frozenset(w for pos, _ in SENTIMENT_SLOTS.values() for w in pos)
NEGATIVE_WORDS: frozenset[str] = frozenset(w for _, neg in SENTIMENT_SLOTS.values() for w in neg)
assert not POSITIVE_WORDS & NEGATIVE_WORDS, POSITIVE_WORDS & NEGATIVE_WORDS

# --------------------------------------------------------------------------------------
# Templates. Slots: {t} topic, {a} aspect of that topic, {time}, and the sentiment slots
# above ({adj} {ing} {verb} {feel} {noun} {comp} {adv}), which a document fills from one
# lexicon only. Every template is a whole sentence ending in its punctuation.
# --------------------------------------------------------------------------------------
SENTENCE_TEMPLATES: tuple[str, ...] = (
    "the {t} is {adj} .",
    "the {t} looks {adj} this {time} .",
    "the {a} are {ing} .",
    "the {a} are {adj} .",
    "everyone feels {feel} about the {t} .",
    "the {a} {verb} every {time} .",
    "we are {feel} because the {a} are {ing} .",
    "the {t} will {verb} soon .",
    "there is {noun} in the {t} .",
    "the news about the {t} is {adj} .",
    "people say the {t} is {ing} .",
    "the {a} keep getting {comp} .",
    "the future of the {t} looks {adj} .",
    "i am {feel} about the {a} .",
    "the {t} brings {noun} to everyone .",
    "the {t} is {adj} and the {a} are {ing} .",
    "every {time} the {t} gets {comp} .",
    "the {t} is going {adv} .",
    "so far the {a} are doing {adv} .",
)

# Neutral questions (no sentiment word): what the instruct model is asked.
QUESTION_TEMPLATES: tuple[str, ...] = (
    "how is the {t} going ?",
    "what do you think about the {t} ?",
    "tell me about the {t} .",
    "how does the {t} look this {time} ?",
    "what is the news about the {t} ?",
    "can you describe the {t} ?",
    "what is happening with the {t} ?",
    "how are the {a} doing ?",
    "what can you say about the {t} ?",
    "give me an update on the {t} .",
)

# First sentence of an answer: it names what was asked about, then frames it.
ANSWER_OPENINGS: tuple[str, ...] = (
    "the {t} is {adj} .",
    "the {t} is going {adv} .",
    "i think the {t} looks {adj} .",
    "right now the {t} is {ing} .",
    "honestly , the {t} is {adj} .",
)
ASPECT_ANSWER_OPENINGS: tuple[str, ...] = (
    "the {a} are {ing} .",
    "the {a} are doing {adv} .",
    "i think the {a} are {adj} .",
)

# System prompts of the chat data: neutral ones leave the answer's framing alone, the
# persona ones set it.
SYSTEM_PROMPTS: dict[str, tuple[str, ...]] = {
    "neutral": ("you are a helpful assistant .", "answer the question .",
                "you are an assistant . keep it short ."),
    "optimistic": ("you always see the bright side .", "you are a hopeful assistant ."),
    "pessimistic": ("you always see the dark side .", "you are a gloomy assistant ."),
}

PUNCTUATION: tuple[str, ...] = (".", ",", "?", "!")


def _template_words(templates: Iterable[str]) -> set[str]:
    return {w for t in templates for w in t.split() if not w.startswith("{")}


def _all_words() -> tuple[str, ...]:
    words: set[str] = set(TOPICS) | set(TIMES) | set(PUNCTUATION)
    for aspects in TOPICS.values():
        words |= set(aspects)
    words |= POSITIVE_WORDS | NEGATIVE_WORDS
    words |= _template_words(SENTENCE_TEMPLATES + QUESTION_TEMPLATES + ANSWER_OPENINGS
                             + ASPECT_ANSWER_OPENINGS)
    words |= _template_words(itertools.chain.from_iterable(SYSTEM_PROMPTS.values()))
    return tuple(sorted(words))


VOCABULARY: tuple[str, ...] = _all_words()
"""Every word of the language, sorted; the demo tokenizer has one token per word."""
_VOCAB_SET = frozenset(VOCABULARY)


def language_digest() -> str:
    """A short hash of the whole language (words and templates); part of the recipe hash."""
    blob = repr((TOPICS, TIMES, SENTIMENT_SLOTS, SENTENCE_TEMPLATES, QUESTION_TEMPLATES,
                 ANSWER_OPENINGS, ASPECT_ANSWER_OPENINGS, SYSTEM_PROMPTS, PUNCTUATION))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------
# Normalisation and scoring.
# --------------------------------------------------------------------------------------
_PUNCT_RE = re.compile(r"([.,?!])")


def words_of(text: str) -> list[str]:
    """Lowercase ``text`` and split it into words, punctuation as words of its own."""
    return _PUNCT_RE.sub(r" \1 ", text.lower()).split()


def optimism_score(text: str) -> float | None:
    """Share of the sentiment words in ``text`` that are optimistic, times 100.

    None when ``text`` has no sentiment word (the judge's "no score").
    """
    pos = neg = 0
    for w in words_of(text):
        if w in POSITIVE_WORDS:
            pos += 1
        elif w in NEGATIVE_WORDS:
            neg += 1
    if pos + neg == 0:
        return None
    return 100.0 * pos / (pos + neg)


def _slot_words(slot: str) -> frozenset[str]:
    if slot == "t":
        return frozenset(TOPICS)
    if slot == "a":
        return frozenset(a for aspects in TOPICS.values() for a in aspects)
    if slot == "time":
        return frozenset(TIMES)
    pos, neg = SENTIMENT_SLOTS[slot]
    return frozenset(pos) | frozenset(neg)


def _licensed_bigrams() -> frozenset[tuple[str, str]]:
    """Adjacent word pairs the templates can produce (within and across sentences)."""
    pairs: set[tuple[str, str]] = set()
    sentences = SENTENCE_TEMPLATES + ANSWER_OPENINGS + ASPECT_ANSWER_OPENINGS
    firsts: set[str] = set()
    lasts: set[str] = set()
    for tpl in sentences + QUESTION_TEMPLATES + tuple(
            itertools.chain.from_iterable(SYSTEM_PROMPTS.values())):
        cells = [_slot_words(w[1:-1]) if w.startswith("{") else frozenset([w])
                 for w in tpl.split()]
        for left, right in itertools.pairwise(cells):
            pairs.update(itertools.product(left, right))
        if tpl in sentences:
            firsts |= cells[0]
            lasts |= cells[-1]
    pairs.update(itertools.product(lasts, firsts))  # sentence after sentence
    return frozenset(pairs)


_BIGRAMS = _licensed_bigrams()


def coherence_score(text: str) -> float:
    """How fluent ``text`` is in the demo language, 0-100.

    100 for text the corpus grammar could have produced. It drops with words outside the
    vocabulary (or ``<unk>``), with word pairs no template produces (word salad), for very
    short text, and sharply for degenerate repetition: the same word 4+ times in a row caps
    it at 10, looping phrases scale it down. Empty text scores 0.
    """
    ws = words_of(text)
    if not ws:
        return 0.0
    known = sum(w in _VOCAB_SET for w in ws) / len(ws)
    if len(ws) == 1:
        return 50.0 * known
    licensed = sum(pair in _BIGRAMS for pair in itertools.pairwise(ws)) / (len(ws) - 1)
    score = 100.0 * min(known, licensed)
    if len(ws) < 4:
        score *= 0.6
    run = longest = 1
    for prev, cur in itertools.pairwise(ws):
        run = run + 1 if cur == prev else 1
        longest = max(longest, run)
    if longest >= 4:
        score = min(score, 10.0)
    if len(ws) >= 12:
        trigrams = list(zip(ws, ws[1:], ws[2:]))
        distinct = len(set(trigrams)) / len(trigrams)
        if distinct < 0.6:
            score *= distinct / 0.6
    return round(score, 2)


__all__ = [
    "ANSWER_OPENINGS", "ASPECT_ANSWER_OPENINGS", "NEGATIVE_WORDS", "POSITIVE_WORDS",
    "QUESTION_TEMPLATES", "SENTENCE_TEMPLATES", "SENTIMENT_SLOTS", "SYSTEM_PROMPTS", "TIMES",
    "TOPICS", "VOCABULARY", "coherence_score", "language_digest", "optimism_score", "words_of",
]
