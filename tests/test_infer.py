"""The inference stage end to end on the demo family: the tree it writes, one row per
token, rm_lora above instruct on the planted trait, replay on identical tokens, reruns,
and one-line errors for bad input."""

import json
import shutil

import pytest
from infer_helpers import TRAIT, cli, compose, write_demo_vectors
from safetensors import safe_open

from trait_pipeline.demo_family import INSTRUCT_TOPIC_SENTIMENT
from trait_pipeline.demo_lexicon import TOPICS
from trait_pipeline.errors import PipelineError
from trait_pipeline.infer import run
from trait_pipeline.layout import DATASETS_DIR, Layout

N_PROMPTS = 8  # datasets/inference/demo.json
COMMON = ("generation.max_new_tokens=12", "method=mean_diff")  # layer=10: the demo preset's


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    write_demo_vectors(root, layers=(10,), methods=("mean_diff",))
    # the sweep of the issue, as a user types it
    r = cli("infer", f"paths.experiments={root}", "-m", "model_variant=instruct,rm_lora", *COMMON)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def lay(root):
    return Layout(root, "demo")


@pytest.fixture(scope="module")
def replayed(root):
    return run(compose("infer", f"paths.experiments={root}", "model_variant=rm_lora",
                       "replay=instruct", *COMMON))


def _raw(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def _json(path):
    return json.loads(path.read_text())


def test_the_sweep_writes_each_variants_tree(lay):
    for v in ("instruct", "rm_lora"):
        for pid in range(1, N_PROMPTS + 1):
            assert lay.raw_path(v, "demo", pid).is_file()
            assert lay.inference_response_path(v, "demo", pid).is_file()
            assert lay.projection_path(v, TRAIT, "demo", pid).is_file()
        # each job's config snapshot lands under its own variant, the sweep's files outside
        assert list((lay.inference_dir(v) / "runs").glob("*/.hydra/config.yaml"))
    assert list(lay.sweeps_dir("infer").glob("*/multirun.yaml"))


def test_exactly_one_row_per_token_aligned_with_the_tokens(lay):
    for v in ("instruct", "rm_lora"):
        for pid in range(1, N_PROMPTS + 1):
            tensors, meta = _raw(lay.raw_path(v, "demo", pid))
            resp = _json(lay.inference_response_path(v, "demo", pid))
            proj = _json(lay.projection_path(v, TRAIT, "demo", pid))
            for phase in ("prompt", "response"):
                n = len(resp[phase]["token_ids"])
                assert n == len(resp[phase]["tokens"]) == resp[phase]["n_tokens"] > 0
                assert tensors[f"{phase}.residual"].shape[:2] == (n, 24)
                assert len(proj["projections"][phase]) == len(proj["token_norms"][phase]) == n
                assert len(proj["activation_norms"][phase]) == 24
            assert json.loads(meta["model_variant"]) == v
            assert resp["metadata"]["model_variant"] == v and resp["metadata"]["model"] == "demo:instruct"
            assert resp["metadata"]["lora"] == ("demo:rm_lora" if v == "rm_lora" else None)
            assert resp["prompt"]["text"].endswith("<|assistant|>")
            assert proj["schema_version"] == 1


def test_rm_lora_projects_higher_than_instruct_on_the_planted_trait(lay):
    """rm_lora was tuned to answer optimistically: higher on average, and higher on every
    prompt whose topic instruct frames pessimistically (on the others both are optimistic)."""
    means = {v: [_json(lay.projection_path(v, TRAIT, "demo", pid))["summary"]["response_mean"]
                 for pid in range(1, N_PROMPTS + 1)] for v in ("instruct", "rm_lora")}
    assert sum(means["rm_lora"]) / N_PROMPTS > sum(means["instruct"]) / N_PROMPTS
    questions = [_json(lay.inference_response_path("instruct", "demo", pid))["prompt"]["question"]
                 for pid in range(1, N_PROMPTS + 1)]
    topic_of = {w: t for t, aspects in TOPICS.items() for w in (t, *aspects)}  # "stocks": market
    framed_down = [i for i, q in enumerate(questions)
                   if any(INSTRUCT_TOPIC_SENTIMENT[topic_of[w]] < 0 for w in q.split() if w in topic_of)]
    assert len(framed_down) == N_PROMPTS // 2
    assert all(means["rm_lora"][i] > means["instruct"][i] for i in framed_down), means


def test_projection_records_the_vector_and_why(lay):
    src = _json(lay.projection_path("rm_lora", TRAIT, "demo", 1))["metadata"]["vector_source"]
    assert (src["model_variant"], src["layer"], src["method"]) == ("base", 10, "mean_diff")
    assert src["selection_source"] == "manual" and "layer=10" in src["selection_reason"]
    assert src["path"].startswith("extraction/demo/optimism/base/vectors/")


def test_replay_gives_per_token_differences_on_identical_tokens(lay, replayed):
    assert replayed[TRAIT]["demo"] is not None
    diffs = []
    for pid in range(1, N_PROMPTS + 1):
        own = _json(lay.inference_response_path("instruct", "demo", pid))
        rep = _json(lay.inference_response_path("rm_lora", "demo", pid, replayed_from="instruct"))
        assert rep["response"]["token_ids"] == own["response"]["token_ids"]
        assert rep["prompt"]["token_ids"] == own["prompt"]["token_ids"]
        assert rep["metadata"]["replayed_from"] == "instruct"
        assert rep["metadata"]["tokens_identical_to_source"] is True
        a = _json(lay.projection_path("instruct", TRAIT, "demo", pid))["projections"]["response"]
        b = _json(lay.projection_path("rm_lora", TRAIT, "demo", pid, replayed_from="instruct")
                  )["projections"]["response"]
        assert len(a) == len(b) == len(own["response"]["token_ids"])
        diffs += [y - x for x, y in zip(a, b)]
    assert max(abs(d) for d in diffs) > 1e-3  # a different model reads the same tokens differently
    assert sum(diffs) / len(diffs) > 0  # and the LoRA reads them as more optimistic
    # its own generations are untouched
    assert lay.raw_path("rm_lora", "demo", 1).is_file()


def test_rerun_skips_what_exists(lay, root):
    files = sorted(lay.inference_dir("instruct").glob("[rp]*/**/*.*"))
    before = {p: p.stat().st_mtime_ns for p in files}
    summary = run(compose("infer", f"paths.experiments={root}", "model_variant=instruct", *COMMON))
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert summary[TRAIT]["demo"] is not None


def test_a_stale_replay_is_redone(lay, root, replayed):
    path = lay.inference_response_path("rm_lora", "demo", 3, replayed_from="instruct")
    rec = _json(path)
    rec["response"]["text"] = " something instruct never said"
    path.write_text(json.dumps(rec))
    others = {p: p.stat().st_mtime_ns
              for p in lay.raw_dir("rm_lora", "demo", "instruct").glob("*.safetensors")}
    run(compose("infer", f"paths.experiments={root}", "model_variant=rm_lora", "replay=instruct",
                *COMMON))
    own = _json(lay.inference_response_path("instruct", "demo", 3))
    assert _json(path)["response"]["text"] == own["response"]["text"]
    changed = [p.name for p, t in others.items() if p.stat().st_mtime_ns != t]
    assert changed == ["3.safetensors"]


def test_limit_extra_components_centring_and_best_vector(tmp_path):
    write_demo_vectors(tmp_path, layers=(10,), methods=("mean_diff",))
    lay = Layout(tmp_path, "demo")
    run(compose("infer", f"paths.experiments={tmp_path}", "limit=2", "layer=null", "centered=true",
                "capture_components=[residual,attn_out]", "generation.max_new_tokens=6"))
    assert sorted(p.name for p in lay.raw_dir("instruct", "demo").iterdir()) == [
        "1.safetensors", "2.safetensors"]
    tensors, _ = _raw(lay.raw_path("instruct", "demo", 2))
    assert set(tensors) == {"prompt.residual", "response.residual", "prompt.attn_out",
                            "response.attn_out"}
    src = _json(lay.projection_path("instruct", TRAIT, "demo", 2))["metadata"]["vector_source"]
    assert src["selection_source"] == "effect_size" and "effect size" in src["selection_reason"]
    assert src["centered"] is True and isinstance(src["baseline"], float)


def _no_outputs(experiments):
    """Nothing written but Hydra's own run folder (its config snapshot and log)."""
    inf = experiments / "demo" / "inference"
    return not [p for p in inf.rglob("*") if p.is_file() and "runs" not in p.relative_to(inf).parts]


def _one_line_error(r, pattern):
    import re

    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), r.stderr[-2000:]


def test_missing_prompt_set_fails_before_anything_runs(tmp_path):
    r = cli("infer", f"paths.experiments={tmp_path}", "prompt_set=nope")
    _one_line_error(r, r"unknown prompt set 'nope'")
    assert not (tmp_path / "demo" / "inference").exists()


def test_malformed_prompt_file_is_one_error(tmp_path):
    data = tmp_path / "datasets"
    shutil.copytree(DATASETS_DIR / "traits", data / "traits")
    (data / "inference").mkdir(parents=True)
    (data / "inference" / "broken.json").write_text('{"prompts": [{"id": 1, "text": "a"},]}')
    write_demo_vectors(tmp_path / "exp", layers=(10,), methods=("mean_diff",))
    r = cli("infer", f"paths.experiments={tmp_path / 'exp'}", f"paths.datasets={data}",
            "prompt_set=broken")
    _one_line_error(r, r"malformed prompt file .*broken\.json: line 1")
    assert _no_outputs(tmp_path / "exp")


def test_no_vectors_for_the_trait_is_one_error(tmp_path):
    r = cli("infer", f"paths.experiments={tmp_path}")
    _one_line_error(r, r"no vectors for trait 'demo/optimism' under extraction variant 'base'")
    assert _no_outputs(tmp_path)


def test_replay_of_a_variant_without_responses_is_one_error(root):
    with pytest.raises(PipelineError, match=r"replay=base: no saved responses of 'base'.*"
                                            r"model_variant=base"):
        run(compose("infer", f"paths.experiments={root}", "replay=base", *COMMON))
    with pytest.raises(PipelineError, match=r"replay 'nope' is not a variant"):
        run(compose("infer", f"paths.experiments={root}", "replay=nope", *COMMON))


def test_out_of_memory_halves_the_batch_and_trait_null_only_captures(tmp_path, monkeypatch):
    import trait_pipeline.token_capture as tc

    real, sizes = tc.capture_generate, []

    def small_memory(lm, prompt_ids, *a, **k):  # a device that fits two sequences at a time
        sizes.append(len(prompt_ids))
        if len(prompt_ids) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(lm, prompt_ids, *a, **k)

    monkeypatch.setattr(tc, "capture_generate", small_memory)
    summary = run(compose("infer", f"paths.experiments={tmp_path}", "trait=null", "limit=5",
                          "generation.batch_size=8", "generation.max_new_tokens=4"))
    lay = Layout(tmp_path, "demo")
    assert summary == {} and not lay.inference_dir("instruct").joinpath("projections").exists()
    assert len(list(lay.raw_dir("instruct", "demo").glob("*.safetensors"))) == 5
    assert sizes == [5, 4, 2, 2, 1]  # halved until it fits, then kept at 2


@pytest.mark.slow
def test_with_the_real_extraction_stage(tmp_path):
    """extract -> infer (both variants) -> compare, through the command lines, on the
    vectors the extraction stage writes (the demo preset's layer 10)."""
    r = cli("extract", f"paths.experiments={tmp_path}", "method=[mean_diff,probe]", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("infer", f"paths.experiments={tmp_path}", "-m", "model_variant=instruct,rm_lora",
            "generation.max_new_tokens=12", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("compare", f"paths.experiments={tmp_path}", "model_variants=[instruct,rm_lora]")
    assert r.returncode == 0, r.stderr[-3000:]
    lay = Layout(tmp_path, "demo")
    rec = _json(lay.comparison_dir(TRAIT, "demo") / "instruct_vs_rm_lora.json")
    assert rec["vector_source"]["position"] == "response[:5]" and rec["vector_source"]["layer"] == 10
    assert rec["mean"]["diff"] > 0
