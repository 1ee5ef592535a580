"""Comparing variants: per-prompt and mean differences (b - a) on one vector, per-token
differences on identical tokens with replay, the PNG, and one-line errors."""

import json

import pytest
from infer_helpers import TRAIT, cli, compose, write_demo_vectors

from trait_pipeline.compare import compare, run
from trait_pipeline.errors import PipelineError
from trait_pipeline.infer import run as infer
from trait_pipeline.layout import Layout

N = 4
INFER = ("generation.max_new_tokens=10", "method=mean_diff", f"limit={N}")
PAIR = "model_variants=[instruct,rm_lora]"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    write_demo_vectors(root, layers=(10,), methods=("mean_diff",))
    for extra in (["model_variant=instruct"], ["model_variant=rm_lora"],
                  ["model_variant=rm_lora", "replay=instruct"]):
        infer(compose("infer", f"paths.experiments={root}", *INFER, *extra))
    return root


def _cfg(root, *extra):
    return compose("compare", f"paths.experiments={root}", "method=mean_diff", *extra)


def test_cli_writes_json_and_png_with_per_prompt_and_mean_differences(root):
    r = cli("compare", f"paths.experiments={root}", PAIR, "method=mean_diff")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rm_lora - instruct" in r.stdout and "mean" in r.stdout
    folder = Layout(root, "demo").comparison_dir(TRAIT, "demo")
    rec = json.loads((folder / "instruct_vs_rm_lora.json").read_text())
    png = (folder / "instruct_vs_rm_lora.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert rec["schema_version"] == 1 and rec["difference"] == "rm_lora - instruct"
    assert rec["n_prompts"] == N and [r["prompt_id"] for r in rec["per_prompt"]] == [1, 2, 3, 4]
    for row in rec["per_prompt"]:
        assert row["diff"] == pytest.approx(row["b_mean"] - row["a_mean"])
        assert len(row["a_response"]) == len(row["tokens_a"])
    assert rec["mean"]["diff"] == pytest.approx(rec["mean"]["b"] - rec["mean"]["a"])
    assert rec["mean"]["diff"] > 0  # the LoRA expresses the planted trait more
    assert rec["missing"]["instruct"] == [5, 6, 7, 8]  # limit=4 captured the first four


def test_replay_compares_identical_tokens_per_token(root):
    rec = compare(_cfg(root, PAIR, "replay=true"))
    assert rec["replay"] and rec["n_prompts"] == N
    n_tok = 0
    for row in rec["per_prompt"]:
        assert row["tokens_a"] == row["tokens_b"]
        assert len(row["per_token_diff"]) == len(row["a_response"]) == len(row["b_response"])
        assert row["per_token_diff"] == pytest.approx(
            [b - a for a, b in zip(row["a_response"], row["b_response"])])
        n_tok += len(row["per_token_diff"])
    assert rec["n_tokens"] == n_tok and rec["mean"]["per_token_diff"] > 0


def test_one_vector_for_both_variants_and_it_is_recorded(root):
    rec = compare(_cfg(root, PAIR))
    src = rec["vector_source"]
    assert (src["model_variant"], src["layer"], src["method"]) == ("base", 10, "mean_diff")
    # the numbers are those of the projection files infer wrote with the same vector
    lay = Layout(root, "demo")
    own = json.loads(lay.projection_path("rm_lora", TRAIT, "demo", 1).read_text())
    assert rec["per_prompt"][0]["b_response"] == pytest.approx(own["projections"]["response"])


def test_the_order_of_the_pair_sets_the_sign(root):
    ab = compare(_cfg(root, PAIR))
    ba = compare(_cfg(root, "model_variants=[rm_lora,instruct]"))
    assert ba["mean"]["diff"] == pytest.approx(-ab["mean"]["diff"])


@pytest.mark.parametrize("pair, match", [
    ("model_variants=[instruct]", r"expected two different variants"),
    ("model_variants=[instruct,instruct]", r"expected two different variants"),
    ("model_variants=[instruct,nope]", r"model variant 'nope' is not defined.*base, instruct, rm_lora"),
])
def test_bad_pairs(root, pair, match):
    with pytest.raises(PipelineError, match=match):
        run(_cfg(root, pair))


def test_missing_captures_say_which_command_to_run(root):
    with pytest.raises(PipelineError, match=r"no captures of 'base' .*model_variant=base"):
        compare(_cfg(root, "model_variants=[instruct,base]"))
    with pytest.raises(PipelineError, match=r"replaying 'rm_lora'.*model_variant=instruct replay=rm_lora"):
        compare(_cfg(root, "model_variants=[rm_lora,instruct]", "replay=true"))


def test_stale_replay_is_refused(root, tmp_path):
    import shutil

    copy = tmp_path / "exp"
    shutil.copytree(root, copy)
    lay = Layout(copy, "demo")
    path = lay.inference_response_path("rm_lora", "demo", 2, replayed_from="instruct")
    rec = json.loads(path.read_text())
    rec["response"]["token_ids"][0] += 1
    path.write_text(json.dumps(rec))
    with pytest.raises(PipelineError, match=r"prompt 2: 'rm_lora''s replay does not hold"):
        compare(_cfg(copy, PAIR, "replay=true"))


def test_cli_error_is_one_line(root):
    r = cli("compare", f"paths.experiments={root}", "model_variants=[instruct,nope]")
    assert r.returncode == 2
    expected = ("error: model variant 'nope' is not defined by experiment 'demo'; "
                "it defines: base, instruct, rm_lora")
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")] == [expected]
