"""Prompt sets: both file shapes, `prompt` -> `text`, extras kept, one-line errors."""

import json

import pytest

from trait_pipeline.errors import PipelineError
from trait_pipeline.prompt_sets import (
    available_prompt_sets,
    load_prompt_set,
    parse_prompt_file,
    resolve_prompt_sets,
)


def _write(root, name, obj):
    path = root / "inference" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_demo_set_loads_with_ids_text_and_notes():
    s = load_prompt_set("demo")
    assert s.name == "demo" and len(s.prompts) == 8
    assert s.prompts[0].id == 1 and s.prompts[0].text == "how is the game going ?"
    assert s.prompts[0].note and "game" in s.prompts[0].note
    assert [p.id for p in s.limited(3)] == [1, 2, 3] and len(s.limited(0)) == 8


def test_bare_list_with_prompt_key_and_extras(tmp_path):
    _write(tmp_path, "calib", [{"id": 7, "prompt": "hello there", "source": "x", "bias_id": 44},
                               {"id": "b-2", "text": "second"}])
    s = load_prompt_set("calib", tmp_path)
    assert [p.id for p in s.prompts] == [7, "b-2"]
    assert s.prompts[0].text == "hello there"  # prompt -> text
    assert s.prompts[0].extra == {"source": "x", "bias_id": 44}
    assert s.description is None


def test_object_form_keeps_description_and_digit_string_ids_become_ints(tmp_path):
    _write(tmp_path, "s", {"description": "d", "prompts": [{"id": "12", "text": "t"}]})
    s = load_prompt_set("s", tmp_path)
    assert s.description == "d" and s.prompts[0].id == 12


def test_missing_set_names_the_available_ones(tmp_path):
    _write(tmp_path, "one", [{"id": 1, "text": "t"}])
    with pytest.raises(PipelineError, match=r"unknown prompt set 'nope'.*available: .*one") as e:
        load_prompt_set("nope", tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content, match", [
    ("{not json", r"malformed prompt file .*line 1"),
    ({"prompts": "x"}, r"expected a list of prompts or an object with a 'prompts' list"),
    ([], r"it has no prompts"),
    ([{"text": "no id"}], r"prompt #0: missing 'id'"),
    ([{"id": 1}], r"prompt #0: missing or empty 'text'"),
    ([{"id": 1, "text": "a"}, {"id": 1, "text": "b"}], r"duplicate id 1"),
    ([{"id": "../x", "text": "a"}], r"bad id '../x'"),
    ([{"id": True, "text": "a"}], r"bad id True"),
    (["just a string"], r"expected an object with id and text"),
])
def test_malformed_files_fail_in_one_line(tmp_path, content, match):
    path = _write(tmp_path, "bad", content)
    with pytest.raises(PipelineError, match=match) as e:
        parse_prompt_file(path)
    assert "\n" not in str(e.value)


def test_resolve_names_lists_and_all(tmp_path, monkeypatch):
    _write(tmp_path, "b", [{"id": 1, "text": "t"}])
    _write(tmp_path, "a", [{"id": 1, "text": "t"}])
    shipped = tmp_path / "shipped"  # stands in for the package's datasets, searched after ours
    _write(shipped, "s", [{"id": 1, "text": "t"}])
    monkeypatch.setattr("trait_pipeline.layout.DATASETS_DIR", shipped)
    assert available_prompt_sets(tmp_path) == ["a", "b", "s"]
    assert resolve_prompt_sets("all", tmp_path) == ["a", "b", "s"]
    assert resolve_prompt_sets(["b", "a", "b"], tmp_path) == ["b", "a"]
    with pytest.raises(PipelineError, match="prompt_set is empty"):
        resolve_prompt_sets([], tmp_path)
    monkeypatch.setattr("trait_pipeline.layout.DATASETS_DIR", tmp_path / "none")
    with pytest.raises(PipelineError, match="no prompt sets in"):
        resolve_prompt_sets("all", tmp_path / "empty")


def test_bad_set_name_is_refused():
    with pytest.raises(PipelineError, match="bad prompt set"):
        load_prompt_set("../etc/passwd")
