"""Judges: an OpenAI-compatible judge against a real local HTTP server, the local Hugging
Face judge on a small model, the offline demo judge, and the judge config group."""

import json
from pathlib import Path

import pytest
import torch
from judge_server import JudgeServer

from trait_pipeline.errors import PipelineError
from trait_pipeline.judges import TraitSpec, load_trait_spec, make_judge
from trait_pipeline.judges.prompts import trait_messages

torch.set_num_threads(1)

KEY = "sk-test-SECRET-0123456789"
SPEC = TraitSpec("optimism", "Hopeful framing.", trait_id="demo/optimism")
ITEMS = [("how is the project going ?", "the project is thriving ."),
         ("how is the market ?", "the market is collapsing .")]


class FakeServer(JudgeServer):
    """Score prompts (max_tokens=1, logprobs) get top logprobs that depend on the answer:
    "thriving" -> 90/80 (score 86.67), anything else -> 10/20 (13.33); verdicts get ANSWERS,
    or PARTIAL when the answer says "dodge". ``fail`` = HTTP statuses to answer first.
    """

    def __init__(self):
        super().__init__(
            scores=lambda text: ([("90", 0.6), ("80", 0.3), ("Sure", 0.1)] if "thriving" in text
                                 else [("10", 0.6), ("20", 0.3), ("I", 0.1)]),
            verdict=lambda text: "PARTIAL" if "dodge" in text else "ANSWERS", key=KEY)

    def answer(self, body):
        if body.get("logprobs"):
            assert body["max_tokens"] == 1 and body["temperature"] == 0
        return super().answer(body)


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def openai_judge(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", KEY)

    def make(**over):
        cfg = {"kind": "openai", "base_url": server.url, "model": "judge-model",
               "api_key_env": "TEST_JUDGE_KEY", "backoff_s": 0.01, "retries": 3, **over}
        return make_judge(cfg, cache_dir=tmp_path / "cache")

    return make


def test_logprob_weighted_scores(server, openai_judge):
    judge = openai_judge()
    scores = judge.score_trait(SPEC, ITEMS)
    assert scores == [pytest.approx((90 * 0.6 + 80 * 0.3) / 0.9), pytest.approx((10 * 0.6 + 20 * 0.3) / 0.9)]
    body = server.requests[0]["body"]
    assert body["model"] == "judge-model" and body["logprobs"] is True and body["top_logprobs"] == 20
    assert server.requests[0]["auth"] == f"Bearer {KEY}"
    assert "Hopeful framing." in body["messages"][0]["content"]  # the default rubric prompt


def test_custom_eval_prompt_is_used_when_the_trait_has_one(server, openai_judge):
    spec = load_trait_spec("demo/optimism")
    assert spec.eval_prompt is not None
    openai_judge().score_trait(spec, ITEMS[:1])
    msgs = server.requests[0]["body"]["messages"]
    assert len(msgs) == 1 and "the project is thriving ." in msgs[0]["content"]
    assert "Respond with a number between 0 and 100" in msgs[0]["content"]


def test_low_mass_gives_none(server, openai_judge):
    judge = openai_judge(min_mass={"trait": 0.95, "coherence": 0.1})
    assert judge.score_trait(SPEC, ITEMS[:1]) == [None]


def test_coherence_is_capped_by_the_relevance_verdict(server, openai_judge):
    out = openai_judge().score_coherence([ITEMS[0], ("how is the project ?", "the project is thriving . dodge")])
    assert out[0] == pytest.approx(86.667, abs=1e-2) and out[1] == 50.0


def test_retries_on_429_and_500(server, openai_judge):
    server.fail = [429, 500, 503]
    scores = openai_judge().score_trait(SPEC, ITEMS[:1])
    assert scores[0] == pytest.approx(86.667, abs=1e-2)
    assert len(server.requests) == 4  # three failures, then the answer


def test_retries_exhausted_give_none_not_a_crash(server, openai_judge, caplog):
    server.fail = [500] * 10
    assert openai_judge(retries=2).score_trait(SPEC, ITEMS[:1]) == [None]
    assert len(server.requests) == 3 and "failed after 3 attempts" in caplog.text


def test_cache_hits_skip_the_server(server, openai_judge, tmp_path):
    first = openai_judge().score_trait(SPEC, ITEMS)
    n = len(server.requests)
    again = openai_judge().score_trait(SPEC, ITEMS)  # a new judge (new process) reads the cache
    assert again == first and len(server.requests) == n
    openai_judge(model="other-model").score_trait(SPEC, ITEMS)  # keyed by judge model too
    assert len(server.requests) == n + 2
    openai_judge(cache=False).score_trait(SPEC, ITEMS)
    assert len(server.requests) == n + 4
    # failed requests are not cached: a later run asks again
    server.fail = [500]
    assert openai_judge(retries=0).score_trait(SPEC, [("q ?", "thriving x")]) == [None]
    assert openai_judge(retries=0).score_trait(SPEC, [("q ?", "thriving x")])[0] is not None


def test_concurrency_is_bounded(server, openai_judge):
    server.delay = 0.05
    items = [(f"question {i} ?", "the project is thriving .") for i in range(12)]
    out = openai_judge(max_concurrency=3, cache=False).score_trait(SPEC, items)
    assert len(out) == 12 and all(s is not None for s in out)
    assert 1 < server.max_in_flight <= 3


def test_the_api_key_never_leaks(server, openai_judge, tmp_path):
    judge = openai_judge()
    judge.score_trait(SPEC, ITEMS)
    assert KEY not in repr(judge) and KEY not in json.dumps(judge.describe())
    for f in (tmp_path / "cache").rglob("*.json"):
        assert KEY not in f.read_text()


def test_key_and_server_errors_are_one_line(server, openai_judge, monkeypatch, tmp_path):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(PipelineError, match="NO_SUCH_KEY_VAR"):
        openai_judge(api_key_env="NO_SUCH_KEY_VAR")
    monkeypatch.setenv("WRONG_KEY", "sk-wrong")
    with pytest.raises(PipelineError, match="refused the API key"):
        openai_judge(api_key_env="WRONG_KEY", cache=False).score_trait(SPEC, ITEMS[:1])
    bad = make_judge({"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": None,
                      "retries": 0, "cache": False}, cache_dir=tmp_path)
    with pytest.raises(PipelineError, match="cannot reach the judge server"):
        bad.score_trait(SPEC, ITEMS[:1])


def test_unknown_kind_and_bad_values():
    with pytest.raises(PipelineError, match="unknown judge kind 'gpt'"):
        make_judge({"kind": "gpt"}, cache_dir=Path("."))
    with pytest.raises(PipelineError, match="judge.max_concurrency"):
        make_judge({"kind": "openai", "max_concurrency": 0}, cache_dir=Path("."))
    with pytest.raises(PipelineError, match="unknown key judge.api_key"):
        make_judge({"kind": "openai", "api_key": "sk-x"}, cache_dir=Path("."))  # a key is never a config value


def test_config_group_files_compose_and_check():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from trait_pipeline import resolvers
    from trait_pipeline.judges.settings import check_judge_config
    from trait_pipeline.layout import CONF_DIR

    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in ("openai", "local_hf", "offline"):
            cfg = compose(config_name="steer", overrides=[f"judge={name}"])
            assert check_judge_config(cfg.judge)["kind"] == name
        assert compose(config_name="steer", overrides=["judge=openai"]).judge.api_key_env == "OPENAI_API_KEY"
    GlobalHydra.instance().clear()


# --- offline -------------------------------------------------------------------------------------
def test_offline_judge_scores_the_demo_trait():
    judge = make_judge({"kind": "offline"}, cache_dir=Path("."))
    assert judge.score_trait(SPEC, ITEMS) == [100.0, 0.0]
    coh = judge.score_coherence([ITEMS[0], ("how is the project going ?", "the weather is lovely ."),
                                 ("how is it ?", "great great great great great")])
    assert coh[0] >= 90 and coh[1] == 50.0 and coh[2] < 30
    with pytest.raises(PipelineError, match="only knows the demo trait"):
        judge.check_trait(TraitSpec("sycophancy", "...", trait_id="behavior/sycophancy"))


# --- local Hugging Face ----------------------------------------------------------------------------
def _number_model(path: Path) -> Path:
    """A small Llama whose word-level vocabulary spells 0..100 as single tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = (["<pad>", "<s>", "</s>", "<unk>"] + [str(i) for i in range(101)]
             + ["the", "project", "is", "thriving", "ANSWERS", "PARTIAL", ".", "?", ":"])
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2, max_position_embeddings=2048,
                                         bos_token_id=1, eos_token_id=2, pad_token_id=0))
    fast.save_pretrained(path)
    model.save_pretrained(path)
    return path


def test_local_hf_judge_scores_over_the_whole_vocabulary(tmp_path):
    path = _number_model(tmp_path / "numbers")
    cfg = {"kind": "local_hf", "model": str(path), "device": "cpu", "dtype": "float32",
           "use_chat_template": False}
    judge = make_judge(cfg, cache_dir=tmp_path / "cache")
    calls = []
    orig = judge._score_uncached
    judge._score_uncached = lambda prompts: calls.append(len(prompts)) or orig(prompts)
    scores = judge.score_trait(SPEC, ITEMS)
    # the same number by hand: softmax over the vocabulary, weighted mean over the number tokens
    lm = judge.lm
    messages = trait_messages(SPEC, *ITEMS[0])
    text = judge._render(messages)
    batch = lm.pad_batch(lm.encode([text]))
    with torch.no_grad():
        probs = torch.softmax(lm.model(**batch).logits[0, -1].float(), -1)
    ids = [lm.tokenizer.convert_tokens_to_ids(str(i)) for i in range(101)]
    p = probs[ids]
    expected = float((p * torch.arange(101.0)).sum() / p.sum())
    # the judge needs mass >= 0.25 on numbers; a random model spreads ~101/len(vocab) there
    if float(p.sum()) >= 0.25:
        assert scores[0] == pytest.approx(expected, rel=1e-4)
    else:
        assert scores[0] is None
    raw = judge._through_cache([messages], "score", orig, to_json=lambda r: {"score": r.score, "mass": r.mass},
                               from_json=lambda d: d)[0]
    assert raw["score"] == pytest.approx(expected, rel=1e-4) and raw["mass"] == pytest.approx(float(p.sum()), rel=1e-4)
    assert calls == [2]
    judge.score_trait(SPEC, ITEMS)  # cache hit: no forward pass
    assert calls == [2]


def test_local_hf_judge_refuses_a_vocabulary_without_numbers():
    with pytest.raises(PipelineError, match="no token that spells an integer"):
        make_judge({"kind": "local_hf", "model": "demo:instruct", "device": "cpu", "dtype": "float32"},
                   cache_dir=Path("/tmp"))
