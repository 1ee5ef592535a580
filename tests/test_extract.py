"""The extraction stage end to end on the demo family: files, ground truth, reruns, errors."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from trait_pipeline import resolvers
from trait_pipeline.cli import quote_positions
from trait_pipeline.config import validate
from trait_pipeline.demo_family import RECIPE
from trait_pipeline.errors import PipelineError
from trait_pipeline.extract import run, split_scenarios
from trait_pipeline.layout import CONF_DIR, PROJECT_ROOT, Layout
from trait_pipeline.vector_store import PROVENANCE_KEYS, load_tensors, load_vector

TRAIT = "demo/optimism"
FAST = ["generation.max_new_tokens=6"]  # response[:5] needs 5 tokens; greedy tokens are the same


def make_cfg(experiments: Path, *overrides: str):
    resolvers.register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="extract", overrides=[
                f"paths.experiments={experiments}", *[quote_positions(o) for o in overrides]])
    finally:
        GlobalHydra.instance().clear()
    validate(cfg)
    return cfg


def extract(experiments: Path, *overrides: str) -> dict:
    return run(make_cfg(experiments, *overrides))


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """mtime and content hash of every file (Hydra's per-run dirs aside)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file() and "runs" not in p.parts
            and not p.name.endswith(".lock")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    exp = tmp_path_factory.mktemp("experiments")
    summary = extract(exp, *FAST)
    lay = Layout(exp, "demo")
    return exp, lay, lay.extraction_dir(TRAIT, "base"), summary


def test_writes_the_full_tree(demo):
    _, lay, root, summary = demo
    assert summary["steps"]["generate"] == "ran" and summary["steps"]["vet"].startswith("off")
    for f in ("responses/pos.json", "responses/neg.json", "responses/metadata.json",
              "activations/response__5/residual/train.safetensors",
              "activations/response__5/residual/val.safetensors",
              "activations/response__5/residual/metadata.json",
              "vectors/response__5/residual/evaluation.json",
              "vectors/response__5/residual/evaluation.png",
              "vectors/response__5/residual/logit_lens.json"):
        assert (root / f).is_file(), f
    for method in ("mean_diff", "probe", "gradient", "random_baseline"):
        d = lay.vectors_dir(TRAIT, "base", "response[:5]", "residual", method)
        assert sorted(p.name for p in d.glob("layer*.safetensors")) == sorted(f"layer{i}.safetensors" for i in range(24))
        meta = json.loads((d / "metadata.json").read_text())
        assert set(meta["layers"]) == {str(i) for i in range(24)}
    v, prov = load_vector(lay.vector_path(TRAIT, "base", "response[:5]", "residual", "probe", 7))
    assert v.shape == (RECIPE.hidden_size,) and abs(float(v.norm()) - 1) < 1e-5
    assert set(PROVENANCE_KEYS) <= set(prov)
    assert prov["layer"] == 7 and prov["model_variant"] == "base" and prov["model"] == "demo:base"
    assert prov["position"] == "response[:5]" and prov["method"] == "probe" and "hidden_states[L+1]" in prov["layer_convention"]
    ev = json.loads(lay.evaluation_path("base").read_text())
    assert ev["schema_version"] == 1 and len(ev["results"]) == 4 * 24
    assert ev["best"][TRAIT]["method"] != "random_baseline"
    assert {"trait", "method", "layer", "component", "position", "val_accuracy", "val_effect_size",
            "polarity_correct", "combined_score"} <= set(ev["results"][0])
    assert ev["entries"][0]["activation_norms"]["10"] > 0
    lens = json.loads((root / "vectors/response__5/residual/logit_lens.json").read_text())
    assert set(lens["methods"]["probe"]) == {"mid", "late"} and len(lens["methods"]["probe"]["late"]["toward"]) == 10
    assert set(summary["timings"]) >= {"generate", "activations", "vectors", "evaluate", "total"}


def test_planted_trait_is_recovered(demo):
    _, lay, _, _ = demo
    rows = json.loads(lay.evaluation_path("base").read_text())["results"]
    best = max(r["val_accuracy"] for r in rows if r["method"] != "random_baseline")
    rand = [r["val_accuracy"] for r in rows if r["method"] == "random_baseline"]
    assert best >= 0.95
    assert abs(sum(rand) / len(rand) - 0.5) < 0.15
    # the best vector beats the null of random directions, with an interval on its accuracy
    ev = json.loads(lay.evaluation_path("base").read_text())
    b = ev["best"][TRAIT]
    assert b["p_value"] <= 0.05 and b["null_percentile"] >= 95
    assert b["val_accuracy_ci"][0] > 0.8 and b["val_accuracy_ci"][1] <= 1.0
    assert len(ev["entries"][0]["null_band"]) == 24
    assert all(r["p_value"] >= 1 / 101 - 1e-4 for r in rows)


def test_responses_keep_exact_token_ids(demo):
    from trait_pipeline.config import VariantSpec
    from trait_pipeline.models import load_tokenizer

    _, _, root, _ = demo
    tok = load_tokenizer(VariantSpec("base", "demo:base", use_chat_template=False))
    records = json.loads((root / "responses/pos.json").read_text())
    assert [r["scenario_idx"] for r in records] == list(range(len(records)))
    for r in records[:10]:
        assert r["prompt_ids"] == tok(r["prompt"])["input_ids"]
        body = [t for t in r["response_ids"] if t != tok.eos_token_id]
        # the joining space survives: prompt + response re-tokenizes to the generated ids
        assert tok(r["prompt"] + r["response"])["input_ids"] == r["prompt_ids"] + body
        assert r["response"].startswith(" ")


def test_split_is_grouped_by_scenario_and_seeded(demo):
    _, _, root, _ = demo
    meta = json.loads((root / "activations/response__5/residual/metadata.json").read_text())
    val = set(meta["split"]["val_scenarios"])
    assert val == set(split_scenarios(240, 0.1, 0)) and len(val) == 24
    pos = json.loads((root / "responses/pos.json").read_text())
    for side in ("pos", "neg"):
        assert {pos[i]["scenario_idx"] for i in meta["rows"]["val"][side]} == val
        assert not val & {pos[i]["scenario_idx"] for i in meta["rows"]["train"][side]}
    assert split_scenarios(240, 0.1, 1) != split_scenarios(240, 0.1, 0)
    # every record is in train, in val, or reported as skipped (empty window)
    for side in ("pos", "neg"):
        skipped = [s["idx"] for s in meta["skipped"] if s["polarity"] == side]
        assert sorted(meta["rows"]["train"][side] + meta["rows"]["val"][side] + skipped) == list(range(240))
    t, _ = load_tensors(root / "activations/response__5/residual/train.safetensors")
    assert t["pos"].shape == (meta["counts"]["train"]["pos"], 24, RECIPE.hidden_size)
    assert t["neg"].shape == (meta["counts"]["train"]["neg"], 24, RECIPE.hidden_size)


def test_rerun_does_no_work_and_changes_no_file(demo):
    exp, _, _, _ = demo
    before = snapshot(exp)
    summary = extract(exp, *FAST)
    assert all(s.startswith(("skipped", "off")) for s in summary["steps"].values()), summary["steps"]
    assert "load_model" not in summary["timings"]  # nothing needed the model
    assert snapshot(exp) == before


def test_force_vectors_redoes_only_vectors(demo):
    exp, lay, _, _ = demo
    before = snapshot(exp)
    probe_dir = lay.vectors_dir(TRAIT, "base", "response[:5]", "residual", "probe")
    old_vectors = {p.name: load_vector(p) for p in probe_dir.glob("layer*.safetensors")}
    summary = extract(exp, *FAST, "force=[vectors]", "method=[mean_diff,probe]")
    for name, (v, prov) in old_vectors.items():
        v2, prov2 = load_vector(probe_dir / name)
        assert torch.equal(v, v2) and prov == prov2
    assert summary["steps"]["vectors"] == "ran (mean_diff, probe)"
    assert summary["steps"]["generate"] == summary["steps"]["activations"] == "skipped"
    after = snapshot(exp)
    changed = {k for k in after if after[k][0] != before[k][0]}
    assert changed and all("/mean_diff/" in k or "/probe/" in k for k in changed), changed
    # same seed, same activations: the rewritten vectors are bit-identical, so nothing downstream reran
    # (compare contents: safetensors stores its metadata map in no fixed order)
    saved = {k: load_vector(exp / k) for k in changed if k.endswith(".safetensors")}
    assert len(saved) == 48
    v, prov = saved[next(iter(saved))]
    assert prov["seed"] == prov["layer"] and "activations_digest" in prov
    assert summary["steps"]["evaluate"] == summary["steps"]["logit_lens"] == "skipped"
    ev = json.loads(lay.evaluation_path("base").read_text())
    assert {r["method"] for r in ev["results"]} == {"mean_diff", "probe", "gradient", "random_baseline"}


def test_empty_window_is_reported_and_rows_do_not_shift(demo, tmp_path):
    import shutil

    exp, _, root, _ = demo
    exp2 = tmp_path / "exp"
    shutil.copytree(exp, exp2)
    root2 = Layout(exp2, "demo").extraction_dir(TRAIT, "base")
    pos = json.loads((root2 / "responses/pos.json").read_text())
    victim = next(i for i, r in enumerate(pos) if r["scenario_idx"] not in split_scenarios(240, 0.1, 0)
                  and r["response"].strip())  # a train record with a non-empty response
    pos[victim]["response_ids"], pos[victim]["response"] = [], ""
    (root2 / "responses/pos.json").write_text(json.dumps(pos))
    before = json.loads((root / "activations/response__5/residual/metadata.json").read_text())
    extract(exp2, *FAST, "force=[activations]", "steps=[activations]")
    meta = json.loads((root2 / "activations/response__5/residual/metadata.json").read_text())
    assert [(s["polarity"], s["idx"]) for s in meta["skipped"]] == \
        [(s["polarity"], s["idx"]) for s in before["skipped"]] + [("pos", victim)]
    assert "empty window" in meta["skipped"][-1]["reason"]
    assert meta["counts"]["train"] == {"pos": before["counts"]["train"]["pos"] - 1,
                                       "neg": before["counts"]["train"]["neg"]}
    assert victim not in meta["rows"]["train"]["pos"]
    old, _ = load_tensors(root / "activations/response__5/residual/train.safetensors")
    new, _ = load_tensors(root2 / "activations/response__5/residual/train.safetensors")
    old_rows = json.loads((root / "activations/response__5/residual/metadata.json").read_text())["rows"]["train"]["pos"]
    keep = [old_rows.index(i) for i in meta["rows"]["train"]["pos"]]
    assert torch.allclose(new["pos"], old["pos"][keep], atol=1e-5)  # every other row where it was
    assert torch.allclose(new["neg"], old["neg"], atol=1e-5)


@pytest.mark.parametrize("override,message", [
    ("method=[mean_diff,pca]", "unknown method 'pca'; expected one of"),
    ("position=response[:5", "bad position 'response[:5'"),
    ("layers=[3,24]", "layer 24 out of range: the model has layers 0..23"),
    ("force=[vectorz]", "bad force value 'vectorz'"),
    ("steps=[generate,shuffle]", "unknown step 'shuffle'"),
    ("val_split=1.5", "bad val_split 1.5"),
])
def test_bad_settings_fail_before_any_write(demo, override, message):
    exp, _, _, _ = demo
    before = snapshot(exp)
    with pytest.raises(PipelineError, match=message.replace("[", r"\[")) as exc:
        extract(exp, *FAST, "force=true", override)
    assert "\n" not in str(exc.value)
    assert snapshot(exp) == before


@pytest.mark.parametrize("files,message", [
    ({"positive.txt": "a\nb\nc\n", "negative.txt": "a\nb\n"}, "misaligned scenarios for demo/optimism"),
    ({"positive.txt": "\n", "negative.txt": "a\n"}, "positive.txt is empty"),
    ({"positive.jsonl": '{"prompt": "a"}\n{"prompt": \n', "negative.jsonl": '{"prompt": "b"}\n{"prompt": "c"}\n'},
     "malformed JSON in .*positive.jsonl line 2"),
])
def test_bad_trait_files_fail_before_any_write(demo, tmp_path, files, message):
    exp, _, _, _ = demo
    d = tmp_path / "datasets" / "traits" / "demo" / "optimism"
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(text)
    before = snapshot(exp)
    with pytest.raises(PipelineError, match=message):
        extract(exp, *FAST, "force=true", f"paths.datasets={tmp_path / 'datasets'}")
    assert snapshot(exp) == before


def test_cli_error_is_one_line_and_exit_2(demo):
    exp, _, _, _ = demo
    before = snapshot(exp)
    proc = subprocess.run(
        [sys.executable, "-m", "trait_pipeline.extract", f"paths.experiments={exp}", "layers=[99]", "force=true"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: layer 99 out of range: the model has layers 0..23"]
    assert snapshot(exp) == before


def test_rm_lora_variant_with_offline_vetting(tmp_path):
    """peft model + chat template + judge: vetting files written and the filter applied."""
    summary = extract(tmp_path, *FAST, "model_variant=rm_lora", "judge=offline", "max_pairs=12",
                      "method=[mean_diff]", "layers=[2,12]", "vetting.neg_threshold=100",
                      "steps=[generate,vet,activations,vectors]")
    lay = Layout(tmp_path, "demo")
    root = lay.extraction_dir(TRAIT, "rm_lora")
    assert summary["steps"]["vet"] == "ran"
    resp = json.loads((root / "responses/pos.json").read_text())
    assert resp[0]["formatted_prompt"].startswith("<s><|user|>") and resp[0]["formatted_prompt"].endswith("<|assistant|>")
    scores = json.loads((root / "vetting/response_scores.json").read_text())
    assert scores["judge"]["kind"] == "offline" and len(scores["results"]) == 24
    assert (root / "vetting/scenario_scores.json").is_file()
    meta = json.loads((root / "activations/response__5/residual/metadata.json").read_text())
    failed = scores["failed_indices"]
    assert meta["vetting"]["applied"] and meta["vetting"]["n_failed_pos"] == len(failed["pos"])
    kept = set(meta["rows"]["train"]["pos"]) | set(meta["rows"]["val"]["pos"])
    assert not kept & set(failed["pos"])
    _, prov = load_vector(lay.vector_path(TRAIT, "rm_lora", "response[:5]", "residual", "mean_diff", 12))
    assert prov["lora"] == "demo:rm_lora" and prov["model"] == "demo:instruct"
    assert sorted(p.name for p in lay.vectors_dir(TRAIT, "rm_lora", "response[:5]", "residual", "mean_diff")
                  .glob("layer*")) == ["layer12.safetensors", "layer2.safetensors"]


@pytest.mark.slow
def test_cli_sweep_over_variants_and_positions(tmp_path):
    """`-m` anywhere on the line; each job writes under its own variant, the sweep files beside them."""
    proc = subprocess.run(
        [sys.executable, "-m", "trait_pipeline.extract", f"paths.experiments={tmp_path}", "max_pairs=6",
         "method=[mean_diff]", "layers=[2]", "generation.max_new_tokens=6",
         "-m", "model_variant=base,instruct", "position=response[:5],response[:]"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lay = Layout(tmp_path, "demo")
    for variant in ("base", "instruct"):
        for position in ("response[:5]", "response[:]"):
            assert lay.vector_path(TRAIT, variant, position, "residual", "mean_diff", 2).is_file()
        ev = json.loads(lay.evaluation_path(variant).read_text())
        assert {e["position"] for e in ev["entries"]} == {"response[:5]", "response[:]"}
    assert (lay.sweeps_dir("extract")).is_dir()
    assert not list(lay.extraction_dir(TRAIT, "base").glob("multirun.yaml"))
