"""Trait datasets: aligned pairs, jsonl with system prompts, one-line errors naming file and line."""

import json

import pytest

from trait_pipeline.errors import PipelineError
from trait_pipeline.trait_data import (
    discover_traits,
    load_steering,
    load_trait_data,
    load_trait_definition,
)


def _trait(root, name="cat/t", pos=None, neg=None, ext="txt", definition=None):
    d = root / "traits" / name
    d.mkdir(parents=True)
    if pos is not None:
        (d / f"positive.{ext}").write_text(pos)
    if neg is not None:
        (d / f"negative.{ext}").write_text(neg)
    if definition is not None:
        (d / "definition.txt").write_text(definition)
    return d


def test_demo_trait_loads_aligned():
    data = load_trait_data("demo/optimism")
    assert data.n_pairs == len(data.negative) >= 50
    assert data.positive[0].line == 1 and data.positive[0].prompt
    assert len(data.hash()) == 16 and data.hash() == load_trait_data("demo/optimism").hash()


def test_jsonl_with_system_prompts_takes_precedence(tmp_path):
    rows = [{"prompt": "p1", "system_prompt": "be kind"}, {"prompt": "p2"}]
    d = _trait(tmp_path, pos="\n".join(json.dumps(r) for r in rows), neg='{"prompt": "n1"}\n{"prompt": "n2"}\n',
               ext="jsonl")
    (d / "positive.txt").write_text("ignored\nignored\n")
    (d / "negative.txt").write_text("ignored\nignored\n")
    data = load_trait_data("cat/t", tmp_path)
    assert [s.prompt for s in data.positive] == ["p1", "p2"]
    assert data.positive[0].system_prompt == "be kind" and data.has_system_prompts
    assert data.files == ("positive.jsonl", "negative.jsonl")


def test_misaligned_counts_are_an_error(tmp_path):
    _trait(tmp_path, pos="a\nb\nc\n", neg="a\nb\n")
    with pytest.raises(PipelineError, match="misaligned scenarios for cat/t: positive.txt has 3 and negative.txt has 2"):
        load_trait_data("cat/t", tmp_path)


def test_blank_lines_in_different_places_are_misaligned(tmp_path):
    _trait(tmp_path, pos="a\n\nc\nd\n", neg="a\nb\n\nd\n")
    with pytest.raises(PipelineError, match="line 2 is blank"):
        load_trait_data("cat/t", tmp_path)


def test_empty_file_is_an_error(tmp_path):
    _trait(tmp_path, pos="\n\n", neg="a\n")
    with pytest.raises(PipelineError, match="positive.txt is empty"):
        load_trait_data("cat/t", tmp_path)


def test_missing_side_is_an_error(tmp_path):
    _trait(tmp_path, pos="a\n")
    with pytest.raises(PipelineError, match="missing negative.txt"):
        load_trait_data("cat/t", tmp_path)


@pytest.mark.parametrize("line,msg", [
    ('{"prompt": "ok"', "malformed JSON in .*positive.jsonl line 2"),
    ('["not", "an", "object"]', "line 2: expected a JSON object"),
    ('{"text": "no prompt"}', "line 2: expected a non-empty string 'prompt'"),
    ('{"prompt": "x", "system_prompt": 3}', "line 2: 'system_prompt' must be a string"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, line, msg):
    _trait(tmp_path, pos='{"prompt": "a"}\n' + line + "\n", neg='{"prompt": "a"}\n{"prompt": "b"}\n', ext="jsonl")
    with pytest.raises(PipelineError, match=msg) as exc:
        load_trait_data("cat/t", tmp_path)
    assert "\n" not in str(exc.value)


def test_unknown_trait_lists_available(tmp_path):
    _trait(tmp_path, pos="a\n", neg="b\n")
    with pytest.raises(PipelineError, match="unknown trait 'cat/nope'.*available: .*cat/t"):
        load_trait_data("cat/nope", tmp_path)


def test_definition_fallback_and_verbatim(tmp_path):
    _trait(tmp_path, pos="a\n", neg="b\n")
    assert load_trait_definition("cat/t", tmp_path) == "The trait 't'"
    _trait(tmp_path, name="cat/u", pos="a\n", neg="b\n", definition="Score u.\nHIGH: ...\n")
    assert load_trait_definition("cat/u", tmp_path) == "Score u.\nHIGH: ..."


def test_discovery_needs_both_files(tmp_path):
    _trait(tmp_path, name="a/x", pos="a\n", neg="b\n")
    _trait(tmp_path, name="a/y", pos="a\n")
    _trait(tmp_path, name="b/z", pos="a\n", neg="b\n")
    found = discover_traits(datasets_root=tmp_path)  # these, and the shipped traits after them
    assert {"a/x", "b/z", "demo/optimism"} <= set(found) and "a/y" not in found
    assert found == sorted(found)
    assert discover_traits("b", tmp_path) == ["b/z"]


def test_steering_questions(tmp_path):
    d = _trait(tmp_path, pos="a\n", neg="b\n")
    (d / "steering.json").write_text(json.dumps({"questions": ["q1 ", "q2"], "eval_prompt": "{question} {answer}"}))
    s = load_steering("cat/t", tmp_path)
    assert s.questions == ["q1", "q2"] and s.eval_prompt == "{question} {answer}"
