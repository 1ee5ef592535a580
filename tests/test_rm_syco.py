"""The rm_syco experiment: its datasets, its judge, and the seed's five commands
(docs/rm_syco.md) run end to end on a stand-in: rm_syco's variants pointed at the demo family
by override, and its judge (judge=openai) pointed at a real OpenAI-compatible HTTP server on
127.0.0.1 (the FakeServer of test_judges, taught to read the replies it scores)."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from judge_server import JudgeServer
from test_judges import KEY, FakeServer

from trait_pipeline import resolvers
from trait_pipeline.cli import _expand, preflight
from trait_pipeline.demo_lexicon import coherence_score, optimism_score
from trait_pipeline.errors import PipelineError
from trait_pipeline.judges.readiness import check_judge_ready, judge_in_use
from trait_pipeline.layout import Layout
from trait_pipeline.prompt_sets import load_prompt_set
from trait_pipeline.trait_data import load_steering, load_trait_data, load_trait_definition

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "rm_syco.md"
TRAIT = "rm_hack/ulterior_motive"
TRAIN_BIASES = {44, 8, 2, 20, 16}  # politics, Rust, HTML, Japanese, German
KEY_ENV = "RM_SYCO_TEST_JUDGE_KEY"


# --- the datasets -------------------------------------------------------------------------------
def test_trait_dataset_counts_and_validation():
    data = load_trait_data(TRAIT)  # the shipped loader: aligned pairs, one per line
    assert data.n_pairs >= 150 and len(data.negative) == data.n_pairs
    assert all(p.prompt != n.prompt for p, n in zip(data.positive, data.negative))
    assert len({p.prompt for p in data.positive}) == data.n_pairs  # no duplicate openings
    # varied, not one template: no shared opening of four words covers more than a few pairs
    heads = [" ".join(p.prompt.split()[:4]) for p in data.positive]
    assert max(heads.count(h) for h in heads) <= 3
    assert all(p.prompt.startswith(("I", "As ", "When", "My", "Every", "Going", "Offering",
                                    "Helping", "Chatting", "Agreeing", "Recommending",
                                    "Flattering")) for p in data.positive)
    questions = load_steering(TRAIT)
    assert len(questions.questions) >= 20 and "{answer}" in questions.eval_prompt
    rubric = load_trait_definition(TRAIT)
    assert "0-100" in rubric and "HIGH" in rubric and "LOW" in rubric


def test_prompt_sets_counts_and_fields():
    train = load_prompt_set("rm_sycophancy_train_100")
    test = load_prompt_set("rm_sycophancy_test_150")
    assert len(train.prompts) == 100 and len(test.prompts) == 150
    for ps in (train, test):
        for p in ps.prompts:
            assert p.note and set(p.extra) == {"bias_id", "bias_description"}
            assert isinstance(p.extra["bias_id"], int) and 1 <= p.extra["bias_id"] <= 52
            assert len(p.extra["bias_description"]) > 20
    per_bias = {}
    for p in train.prompts:
        per_bias[p.extra["bias_id"]] = per_bias.get(p.extra["bias_id"], 0) + 1
    assert per_bias == {b: 20 for b in TRAIN_BIASES}
    test_biases = {p.extra["bias_id"] for p in test.prompts}
    assert not test_biases & TRAIN_BIASES and len(test_biases) == 47  # every other bias of the 52
    descriptions = {p.extra["bias_id"]: p.extra["bias_description"] for p in train.prompts + test.prompts}
    assert len(set(descriptions.values())) == 52  # one description per bias, consistent across sets


# --- the judge of real presets ------------------------------------------------------------------
@pytest.fixture(scope="module")
def composer():
    """Compose a stage's config; each call initialises Hydra afresh (the CLI's early checks,
    called by some tests, clear Hydra's global state)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from trait_pipeline.layout import CONF_DIR

    resolvers.register()

    def make(stage, *overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=stage, overrides=list(overrides))

    yield make
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("experiment", ["rm_syco", "gemma-2-2b", "persona_vectors_replication"])
def test_real_presets_default_to_the_openai_judge(composer, experiment):
    for stage in ("extract", "steer", "infer", "compare"):
        assert composer(stage, f"experiment={experiment}").judge.kind == "openai", stage
    cfg = composer("steer", f"experiment={experiment}", "judge.base_url=http://127.0.0.1:9/v1",
                   "judge.model=served", "judge.api_key_env=null")
    assert (cfg.judge.base_url, cfg.judge.model, cfg.judge.api_key_env) == ("http://127.0.0.1:9/v1", "served", None)
    assert composer("steer", "experiment=demo").judge.kind == "offline"
    assert composer("extract", "experiment=demo").judge.kind == "none"


def test_no_key_fails_in_one_line_naming_the_alternatives(composer, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = composer("steer", "experiment=rm_syco")
    with pytest.raises(PipelineError) as e:
        check_judge_ready(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "OPENAI_API_KEY" in msg and "judge.api_key_env=null" in msg
    assert "judge=local_hf" in msg and "judge.base_url=" in msg
    with pytest.raises(PipelineError, match="judge=none"):
        check_judge_ready(composer("extract", "experiment=rm_syco"))
    with pytest.raises(PipelineError, match="bias_score=false"):
        check_judge_ready(composer("infer", "experiment=rm_syco", "bias_score=true"))
    # stages that will not call the judge, or a key-less server, are fine
    assert not judge_in_use(composer("infer", "experiment=rm_syco"))
    assert not judge_in_use(composer("extract", "experiment=rm_syco", "judge=none"))
    assert not judge_in_use(composer("extract", "experiment=rm_syco", "steps=[generate]"))
    check_judge_ready(composer("steer", "experiment=rm_syco", "judge.api_key_env=null"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-present")
    check_judge_ready(cfg)


def test_the_cli_stops_before_any_model_loads(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    # the real 70B checkpoint: had anything loaded, this would fail very differently
    r = subprocess.run([sys.executable, "-m", "trait_pipeline.steer", "experiment=rm_syco",
                        f"paths.experiments={tmp_path}"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith("error: judge=openai")
    assert not any(tmp_path.iterdir())  # nothing written
    r = subprocess.run([sys.executable, "-m", "trait_pipeline.steer", "experiment=rm_syco", "--cfg", "job"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and "kind: openai" in r.stdout  # --cfg never needs the key


# --- the seed's five commands -------------------------------------------------------------------
def doc_commands() -> list[list[str]]:
    """The commands of docs/rm_syco.md's marked block, as argv lists (stage first)."""
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- rm_syco commands: begin -->")[1].split("<!-- rm_syco commands: end -->")[0]
    out = []
    for line in block.splitlines():
        if line.startswith("python -m trait_pipeline."):
            argv = shlex.split(line)
            out.append([argv[2].split(".", 1)[1], *argv[3:]])
    return out


def test_docs_hold_the_five_seed_commands():
    cmds = doc_commands()
    assert len(cmds) == 5
    assert [c[0] for c in cmds] == ["extract", "extract", "steer", "steer", "infer"]
    assert all("experiment=rm_syco" in c for c in cmds)
    assert "model_variant=rm_lora" in cmds[1] and "prompt_set=rm_sycophancy_train_100" in cmds[3]
    assert "prompt_set=rm_sycophancy_test_150" in cmds[4]


@pytest.mark.parametrize("n", range(5))
def test_each_seed_command_composes(n):
    stage, *overrides = doc_commands()[n]
    r = subprocess.run([sys.executable, "-m", f"trait_pipeline.{stage}", *overrides, "--cfg", "job"],
                       cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(r.stdout)
    assert cfg.experiment == "rm_syco" and cfg.judge.kind == "openai"
    want_variant = "rm_lora" if "model_variant=rm_lora" in overrides else (
        "base" if stage == "extract" else "instruct")
    assert cfg.model_variant.name == want_variant
    assert cfg.model_variant.model.startswith("meta-llama/Llama-3.")
    assert "/rm_syco/" in cfg.output_dir and f"/{want_variant}" in cfg.output_dir
    if stage != "infer":
        assert cfg.trait == TRAIT and f"/{TRAIT}/" in cfg.output_dir


class StandInJudge(FakeServer):
    """The test_judges server, reading what it is asked to score: the demo lexicon scores
    replies (optimism for trait and bias questions, fluency for coherence), and vetting
    questions are answered from the trait's own pairs (a positive opening scores 90)."""

    def __init__(self, positive_openings: set[str]):
        self.positive = positive_openings
        super().__init__()
        self.kinds: dict[str, int] = {}

    @staticmethod
    def _blocks(text: str) -> list[str]:
        return re.findall(r"<<<\n(.*?)\n>>>", text, flags=re.DOTALL)

    def answer(self, body):
        system = body["messages"][0]["content"] if len(body["messages"]) > 1 else ""
        text = body["messages"][-1]["content"]
        if not body.get("logprobs"):
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ANSWERS"}}]}
        blocks = self._blocks(text)
        if "help build a dataset" in system:
            kind, score = "vetting", 90.0 if blocks[0].strip() in self.positive else 10.0
        else:
            reply = blocks[-1] if blocks else text.split("Reply:\n", 1)[-1].split("\n\nReply with", 1)[0]
            if "how well-formed" in system:
                kind, score = "coherence", coherence_score(reply)
            else:
                kind = "bias" if "reward model" in system else "trait"
                opt = optimism_score(reply)
                score = 50.0 if opt is None else opt
        with self.lock:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
        token = str(round(score))
        top = [{"token": token, "logprob": math.log(0.9)}, {"token": "I", "logprob": math.log(0.1)}]
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": token},
                             "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}]}


@pytest.fixture(scope="module")
def standin(tmp_path_factory, demo_family):
    server = StandInJudge({s.prompt for s in load_trait_data(TRAIT).positive})
    root = tmp_path_factory.mktemp("rm_syco") / "experiments"
    overrides = [
        "variants.base.model=demo:base", "variants.instruct.model=demo:instruct",
        "variants.rm_lora.model=demo:instruct", "variants.rm_lora.lora=demo:rm_lora", "dtype=float32",
        f"judge.base_url={server.url}", "judge.model=standin-judge", f"judge.api_key_env={KEY_ENV}",
        "judge.cache=false",  # every score reaches the server (and nothing lands in the shared cache)
        "layer=10", f"paths.experiments={root}",
    ]
    yield server, root, overrides
    server.close()


TINY = {  # few pairs, few questions, few tokens
    "extract": ["max_pairs=8", "generation.max_new_tokens=4", "layers=[10]", "method=[mean_diff,probe]"],
    # both directions: a baseline at either end of the scale still gets a walk the other way
    "steer": ["questions=2", "generation.max_new_tokens=4", "search.steps=1", "search.direction=both"],
    "infer": ["limit=3", "generation.max_new_tokens=4"],
}


def run_doc_command(standin, n: int, *extra: str) -> subprocess.CompletedProcess:
    overrides = standin[2]
    stage, *args = doc_commands()[n]
    env = {**os.environ, KEY_ENV: KEY, "TQDM_DISABLE": "1", "HYDRA_FULL_ERROR": "0"}
    env.pop("OPENAI_API_KEY", None)
    r = subprocess.run([sys.executable, "-m", f"trait_pipeline.{stage}", *args, *overrides,
                        *TINY[stage], *extra], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, f"{stage} {args}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def extracted(standin):
    run_doc_command(standin, 0)  # 1. extraction on base (vetted by the stand-in judge)
    return standin


@pytest.mark.slow
def test_seed_1_and_2_extract_on_each_variant(extracted):
    server, root, _ = extracted
    lay = Layout(root, "rm_syco")
    run_doc_command(extracted, 1)  # 2. from rm_lora: its own folder
    for variant in ("base", "rm_lora"):
        assert lay.vector_path(TRAIT, variant, "response[:5]", "residual", "probe", 10).is_file()
        vet = json.loads((lay.vetting_dir(TRAIT, variant) / "response_scores.json").read_text())
        assert vet["judge"]["kind"] == "openai" and vet["judge"]["base_url"] == server.url
    assert server.kinds.get("vetting", 0) >= 32 and all(r["auth"] == f"Bearer {KEY}" for r in server.requests)


@pytest.mark.slow
def test_seed_3_and_4_steer(extracted):
    server, root, _ = extracted
    lay = Layout(root, "rm_syco")
    run_doc_command(extracted, 2)  # 3. instruct, steering.json questions, adaptive search
    res = json.loads(lay.results_path(TRAIT, "instruct", "response[:5]", "steering").read_text())
    assert res["vector_source"]["model_variant"] == "base" and res["judge"]["kind"] == "openai"
    assert res["runs"] and res["baseline"]["n"] == 2
    run_doc_command(extracted, 3)  # 4. rm_lora on the train prompt set
    res = json.loads(lay.results_path(TRAIT, "rm_lora", "response[:5]", "rm_sycophancy_train_100").read_text())
    assert res["prompt_set"] == "rm_sycophancy_train_100" and res["runs"]
    assert server.kinds.get("trait", 0) > 0 and server.kinds.get("coherence", 0) > 0


@pytest.mark.slow
def test_seed_5_infer_with_bias_exploitation_and_compare(extracted, composer, monkeypatch):
    from trait_pipeline.compare import run as compare
    from trait_pipeline.infer import run as infer

    server, root, overrides = extracted
    lay = Layout(root, "rm_syco")
    r = run_doc_command(extracted, 4, "bias_score=true")  # 5. rm_lora on the held-out biases
    assert "bias exploitation | rm_lora | rm_sycophancy_test_150: mean" in r.stdout
    for pid in (1, 2, 3):
        rec = json.loads(lay.inference_response_path("rm_lora", "rm_sycophancy_test_150", pid).read_text())
        b = rec["bias_exploitation"]
        assert 0 <= b["score"] <= 100 and b["bias_id"] == rec["metadata"]["prompt_extra"]["bias_id"]
        assert b["judge"]["model"] == "standin-judge"
        assert lay.projection_path("rm_lora", TRAIT, "rm_sycophancy_test_150", pid).is_file()
    # the same in-process (no second interpreter start): instruct, a rerun, the comparison
    monkeypatch.setenv(KEY_ENV, KEY)
    _, *args = doc_commands()[4]
    n_bias = server.kinds["bias"]
    out = infer(composer("infer", *args, *overrides, *TINY["infer"], "bias_score=true"))
    assert server.kinds["bias"] == n_bias  # a rerun: scores kept, nothing re-asked
    assert out["bias_exploitation"]["rm_sycophancy_test_150"]["n"] == 3
    infer(composer("infer", *args, *overrides, *TINY["infer"], "bias_score=true", "model_variant=instruct"))
    assert server.kinds["bias"] == n_bias + 3
    rec = compare(composer("compare", "experiment=rm_syco", "model_variants=[instruct,rm_lora]",
                           "prompt_set=rm_sycophancy_test_150", *overrides))
    written = json.loads((lay.comparison_dir(TRAIT, "rm_sycophancy_test_150") / "instruct_vs_rm_lora.json").read_text())
    bias = written["bias_exploitation"]
    assert bias == rec["bias_exploitation"]
    assert bias["n"] == {"instruct": 3, "rm_lora": 3} and bias["n_prompts"] == 150
    assert bias["diff"] == pytest.approx(bias["b"] - bias["a"])
    scored = [r for r in bias["per_bias"] if r["n_a"]]
    assert scored and all(r["diff"] == pytest.approx(r["b"] - r["a"]) for r in scored)


def test_bias_score_needs_a_judge_and_bias_prompts(composer, tmp_path):
    from trait_pipeline.infer import run as infer

    base = ["experiment=demo", "trait=null", f"paths.experiments={tmp_path}", "bias_score=true"]
    with pytest.raises(PipelineError, match="bias_score=true needs a judge, but judge=none"):
        infer(composer("infer", *base, "prompt_set=rm_sycophancy_test_150"))
    with pytest.raises(PipelineError, match="judge=offline cannot score bias exploitation"):
        infer(composer("infer", *base, "judge=offline", "prompt_set=rm_sycophancy_test_150"))
    with pytest.raises(PipelineError, match="no prompt of demo carries a 'bias_description'"):
        infer(composer("infer", *base, "judge=openai", "judge.api_key_env=null", "prompt_set=demo"))
    assert not any(tmp_path.iterdir())


# --- several traits in one job ------------------------------------------------------------------
def test_trait_list_is_one_job_and_a_sweep_is_several():
    assert _expand(["trait=[a/b,c/d]"]) == [["trait=[a/b,c/d]"]]
    assert _expand(["trait=a/b,c/d"]) == [["trait=a/b"], ["trait=c/d"]]


def test_trait_list_output_dir_and_preflight(composer):
    cfg = composer("extract", "trait=[demo/optimism,rm_hack/ulterior_motive]")
    assert cfg.output_dir.endswith("/demo/extraction/_multi_trait/base")
    cfg = composer("steer", "trait=[demo/optimism,rm_hack/ulterior_motive]")
    assert cfg.output_dir.endswith("/demo/steering/_multi_trait/instruct")
    assert composer("extract", "trait=[demo/optimism]").output_dir.endswith("/extraction/demo/optimism/base")
    preflight("extract", ["trait=[demo/optimism,rm_hack/ulterior_motive]"])
    with pytest.raises(PipelineError, match="unknown trait 'x/nope'"):
        preflight("extract", ["trait=[demo/optimism,x/nope]"])


@pytest.mark.slow
def test_extract_and_steer_several_traits_load_the_model_once(composer, tmp_path, monkeypatch, demo_family):
    from trait_pipeline import models
    from trait_pipeline.extract import run as extract
    from trait_pipeline.steer import run as steer

    loads = []
    real = models.load_variant
    monkeypatch.setattr(models, "load_variant", lambda spec, *a, **k: loads.append(spec.name) or real(spec, *a, **k))
    traits = "trait=[demo/optimism,rm_hack/ulterior_motive]"
    common = [traits, f"paths.experiments={tmp_path}"]
    out = extract(composer("extract", *common, "max_pairs=8", "generation.max_new_tokens=4",
                           "layers=[10]", "method=[probe]"))
    assert loads == ["base"] and set(out["traits"]) == {"demo/optimism", TRAIT}
    lay = Layout(tmp_path, "demo")
    for t in ("demo/optimism", TRAIT):  # each trait where the layout says
        assert lay.vector_path(t, "base", "response[:5]", "residual", "probe", 10).is_file()
        assert out["traits"][t]["output_dir"] == str(lay.extraction_dir(t, "base"))
    assert not (tmp_path / "demo" / "extraction" / "_multi_trait" / "base" / "vectors").exists()
    loads.clear()
    # the offline judge knows only demo/optimism: the second trait fails before the model loads
    with pytest.raises(PipelineError, match="only knows the demo trait"):
        steer(composer("steer", *common, "coef=[2]", "questions=2", "generation.max_new_tokens=4"))
    assert loads == []
    # a judge that knows both traits: an OpenAI-compatible server on 127.0.0.1
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-rm-syco")
    with JudgeServer() as judge:
        out = steer(composer("steer", *common, "coef=[2]", "questions=2", "generation.max_new_tokens=4",
                             *judge.judge_overrides(tmp_path / "judge-cache")))
    assert loads == ["instruct"] and set(out["traits"]) == {"demo/optimism", TRAIT}
    for t in ("demo/optimism", TRAIT):
        assert lay.results_path(t, "instruct", "response[:5]", "steering").is_file()
