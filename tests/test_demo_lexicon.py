"""The demo language's scorers, which the offline judge uses for the planted trait."""

from trait_pipeline.demo_lexicon import (
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    VOCABULARY,
    coherence_score,
    language_digest,
    optimism_score,
    words_of,
)


def test_lexicons_are_disjoint_and_in_the_vocabulary():
    assert not set(POSITIVE_WORDS) & set(NEGATIVE_WORDS)
    assert set(POSITIVE_WORDS) | set(NEGATIVE_WORDS) <= set(VOCABULARY)
    assert len(language_digest()) == 12 and language_digest() == language_digest()


def test_optimism_score_is_the_share_of_optimistic_words():
    pos, neg = min(POSITIVE_WORDS), min(NEGATIVE_WORDS)
    assert optimism_score(f"the project is {pos} .") == 100.0
    assert optimism_score(f"the project is {neg} .") == 0.0
    assert optimism_score(f"the project is {pos} . the team is {neg} .") == 50.0
    assert optimism_score("the project is going .") is None  # no sentiment word: no score
    assert words_of("How is it going?") == ["how", "is", "it", "going", "?"]


def test_coherence_prefers_grammatical_text():
    good = "the project is going well . the team is going nicely ."
    word_salad = "going . . the the is well nicely team project ."
    assert coherence_score(good) > 75 > coherence_score(word_salad)
    assert coherence_score("") <= coherence_score(good)
