"""Turning a judge's next-token distribution into a 0-100 score (judges/scoring.py, NumberTokens)."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from trait_pipeline.judges.local_hf import NumberTokens
from trait_pipeline.judges.scoring import integer_value, weighted_score


@pytest.mark.parametrize("token,value", [
    ("0", 0), ("7", 7), (" 42", 42), ("\u2581100", 100), ("\u0120 9", 9),
    ("05", None), ("00", None), ("000", None), ("007", None), ("0100", None),
    ("101", None), ("-1", None), ("8.5", None), ("", None), ("ten", None),
])
def test_only_plain_integers_0_to_100_count(token, value):
    assert integer_value(token) == value


def test_leading_zero_tokens_carry_no_score_mass():
    raw = weighted_score([("05", 0.5), ("100", 0.25), ("0", 0.25)])
    assert raw.mass == pytest.approx(0.5)
    assert raw.score == pytest.approx(50.0)


def test_number_tokens_of_a_vocabulary_skip_leading_zeros():
    words = ["<pad>", "<s>", "</s>", "<unk>", "0", "5", "05", "000", "00", "100", "007", "50", "the"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    numbers = NumberTokens.of(fast)
    spelled = {words[i]: int(v) for i, v in zip(numbers.ids.tolist(), numbers.values.tolist())}
    assert spelled == {"0": 0, "5": 5, "100": 100, "50": 50}
