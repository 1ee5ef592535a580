"""The chat's answer events: greedy projections streamed in the chat equal ``infer``'s for
the same prompt, variant and tokens; replay equals ``infer``'s replay; multi-turn prompts go
through the variant's chat template; a stop request ends generation at once."""

import json

import pytest
from infer_helpers import TRAIT, compose, write_demo_vectors

from trait_pipeline.chat.engine import (
    WatchSpec,
    answer_events,
    check_messages,
    conversation_prompt,
    replay_events,
    resolve_watches,
)
from trait_pipeline.chat.experiments import load_experiment
from trait_pipeline.errors import PipelineError
from trait_pipeline.infer import run
from trait_pipeline.layout import DATASETS_DIR, Layout
from trait_pipeline.models import load_variant

N_NEW = 10
INFER = ("limit=1", f"generation.max_new_tokens={N_NEW}", "layer=10", "method=mean_diff")


@pytest.fixture(scope="module")
def root(tmp_path_factory, demo_family):
    root = tmp_path_factory.mktemp("chat_engine")
    write_demo_vectors(root, layers=(6, 10), methods=("mean_diff",))
    run(compose("infer", f"paths.experiments={root}", "model_variant=instruct", *INFER))
    run(compose("infer", f"paths.experiments={root}", "model_variant=rm_lora", "replay=instruct",
                *INFER))
    return root


@pytest.fixture(scope="module")
def exp(root):
    return load_experiment("demo", root)


def _first_prompt() -> str:
    return json.loads((DATASETS_DIR / "inference" / "demo.json").read_text())["prompts"][0]["text"]


def _watches(root, exp, variant, both=False):
    specs = [WatchSpec(TRAIT, 10, "mean_diff")] + ([WatchSpec(TRAIT, 6, "mean_diff")] if both else [])
    return resolve_watches(Layout(root, "demo"), exp, variant, specs)


@pytest.mark.parametrize("variant", ["instruct"])  # rm_lora: see the replay test
def test_streamed_projections_equal_infer(root, exp, variant):
    lm = load_variant(exp.spec(variant), device="cpu")
    watches = _watches(root, exp, variant)
    events = list(answer_events(lm, [{"role": "user", "content": _first_prompt()}], watches,
                                max_new_tokens=N_NEW))
    assert [e["type"] for e in events] == ["prompt"] + ["token"] * (len(events) - 2) + ["done"]
    lay = Layout(root, "demo")
    saved = json.loads(lay.projection_path(variant, TRAIT, "demo", 1).read_text())
    resp = json.loads(lay.inference_response_path(variant, "demo", 1).read_text())
    done = events[-1]
    assert done["prompt_ids"] == resp["prompt"]["token_ids"]
    assert done["response_ids"] == resp["response"]["token_ids"]
    assert done["response_text"] == resp["response"]["text"]
    assert events[0]["projections"][TRAIT] == pytest.approx(saved["projections"]["prompt"], abs=1e-4)
    streamed = [e["projections"][TRAIT] for e in events if e["type"] == "token"]
    assert streamed == pytest.approx(saved["projections"]["response"], abs=1e-4)
    norms = [e["token_norms"][TRAIT] for e in events if e["type"] == "token"]
    assert norms == pytest.approx(saved["token_norms"]["response"], abs=1e-4)
    assert [e["text"] for e in events if e["type"] == "token"] == resp["response"]["tokens"]


def test_replay_equals_infer_replay(root, exp):
    lay = Layout(root, "demo")
    src = json.loads(lay.inference_response_path("instruct", "demo", 1).read_text())
    lm = load_variant(exp.spec("rm_lora"), device="cpu")
    events = list(replay_events(lm, [{"role": "user", "content": _first_prompt()}],
                                src["response"]["token_ids"], _watches(root, exp, "rm_lora")))
    saved = json.loads(lay.projection_path("rm_lora", TRAIT, "demo", 1, "instruct").read_text())
    got = [e["projections"][TRAIT] for e in events if e["type"] == "token"]
    assert got == pytest.approx(saved["projections"]["response"], abs=1e-4)
    assert events[-1]["tokens_identical"] is True


def test_two_traits_multi_turn_template_and_stop(root, exp):
    lm = load_variant(exp.spec("instruct"), device="cpu")
    msgs = [{"role": "user", "content": "how is the game going ?"},
            {"role": "assistant", "content": "the game is going well ."},
            {"role": "user", "content": "what do you think about the concert ?"}]
    text = conversation_prompt(lm, msgs)
    assert text == lm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert "the game is going well ." in text
    watches = _watches(root, exp, "instruct", both=True)
    assert [w.vector.choice.layer for w in watches] == [10, 6]
    count = [0]
    events = []
    for ev in answer_events(lm, msgs, watches, max_new_tokens=50, min_new_tokens=50,
                            should_stop=lambda: count[0] >= 3):
        events.append(ev)
        count[0] += ev["type"] == "token"
    tokens = [e for e in events if e["type"] == "token"]
    assert len(tokens) == 3 and events[-1]["reason"] == "cancelled"
    # the same trait at two layers: one curve each, named by layer and method
    assert set(tokens[0]["projections"]) == {f"{TRAIT}@L10/mean_diff", f"{TRAIT}@L6/mean_diff"}


def test_bad_messages_and_missing_vectors_are_one_line_errors(root, exp):
    with pytest.raises(PipelineError, match="last message"):
        check_messages([{"role": "assistant", "content": "hi"}])
    with pytest.raises(PipelineError, match="bad message 0"):
        check_messages([{"role": "robot", "content": "hi"}])
    with pytest.raises(PipelineError, match="no vectors for trait"):
        resolve_watches(Layout(root, "demo"), exp, "instruct", [WatchSpec("demo/nothing")])
    with pytest.raises(PipelineError, match="massive.calibrate=true"):
        resolve_watches(Layout(root, "demo"), exp, "instruct", [WatchSpec(TRAIT, 10)], "massive")
