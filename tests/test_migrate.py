"""Migration of old flat-layout experiments (issue 7): real files, real .pt pickles, real Hydra."""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from trait_pipeline import migrate
from trait_pipeline.best_vector import select_vector
from trait_pipeline.layout import CONF_DIR, PROJECT_ROOT, Layout
from trait_pipeline.steering_summary import best_per_layer, read_results
from trait_pipeline.vector_store import load_tensors, load_vector

N_LAYERS, D = 24, 64  # the demo family's shape
TRAITS = ("demo/optimism", "behavior/sycophancy")


# --------------------------------------------------------------------------- old trees
def _pt(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


def _js(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _raw_capture(g: torch.Generator, n_prompt: int, n_resp: int) -> dict:
    def phase(n_tok, n_rows):
        return {"text": "hello there", "tokens": [f"t{i}" for i in range(n_tok)],
                "token_ids": list(range(n_tok)),
                "activations": {la: {"residual": torch.randn(n_rows, D, generator=g).half(),
                                     "attn_out": torch.randn(n_rows, D, generator=g).half()}
                                for la in range(N_LAYERS)}}
    # the original's batched mode: one response row fewer than response tokens
    return {"prompt": phase(n_prompt, n_prompt), "response": phase(n_resp, n_resp - 1)}


def _results(layers_coh: dict[int, tuple[float, float]], position: str | None) -> dict:
    runs = []
    for layer, (trait_mean, coh) in layers_coh.items():
        vec = {"layer": layer, "component": "residual", "method": "probe", "weight": 4.0}
        if position:
            vec["position"] = position
        runs.append({"config": {"vectors": [vec]},
                     "result": {"trait_mean": trait_mean, "coherence_mean": coh, "n": 5},
                     "timestamp": "2025-01-01T00:00:00.000001"})
    return {"trait": "x", "steering_model": "m", "steering_experiment": "e",
            "vector_source": {"model": "unknown", "experiment": "e", "trait": "x"},
            "eval": {"model": "gpt-4.1-mini", "method": "logprob"}, "prompts_file": "p",
            "baseline": {"trait_mean": 40.0, "n": 5, "coherence_mean": 90.0}, "runs": runs}


def build_old_tree(root: Path, schema: str) -> None:
    """An experiment as the original research code left it (see the reference docs)."""
    g = torch.Generator().manual_seed(0)
    if schema == "old":
        _js(root / "config.json", {"extraction_model": "google/gemma-2-2b",
                                   "application_model": "google/gemma-2-2b-it",
                                   "use_chat_template": None, "system_prompt": None})
        slug = "gemma-2-2b"  # a comparison run of the base model
    else:
        _js(root / "config.json", {
            "defaults": {"extraction": "base", "application": "instruct"},
            "model_variants": {"base": {"model": "demo:base"}, "instruct": {"model": "demo:instruct"},
                               "rm_lora": {"model": "demo:instruct", "lora": "demo:rm_lora"}}})
        slug = "rm_lora_run"  # matches no model: needs --model-slug
    ex = root / "extraction"
    rows = []
    for ti, trait in enumerate(TRAITS):
        t = ex / trait
        _js(t / "responses/pos.json", [{"scenario_idx": 0, "prompt": "a", "response": "b"}])
        _js(t / "responses/neg.json", [{"scenario_idx": 0, "prompt": "a", "response": "c"}])
        _js(t / "responses/metadata.json", {"model": "m", "n_pos": 1})
        _js(t / "vetting/response_scores.json", {"results": []})
        _js(t / "logit_lens.json", {"trait": trait, "methods": {}})
        acts = t / "activations/response__5/residual"
        _pt(acts / "train_all_layers.pt", torch.randn(11, N_LAYERS, D, generator=g).bfloat16())
        _pt(acts / "val_all_layers.pt", torch.randn(2, N_LAYERS, D, generator=g).bfloat16())
        # the second trait's counts do not add up: its .pt cannot be split, so it is kept
        n_pos = 6 if ti == 0 else 9
        _js(acts / "metadata.json", {"n_examples_pos": n_pos, "n_examples_neg": 5,
                                     "n_val_pos": 1, "n_val_neg": 1, "val_split": 0.1})
        for method in ("mean_diff", "probe"):
            vdir = t / "vectors/response__5/residual" / method
            for layer in range(4):
                _pt(vdir / f"layer{layer}.pt", torch.randn(D, generator=g).bfloat16())
                rows.append({"trait": trait, "method": method, "layer": layer, "component": "residual",
                             "position": "response[:5]", "val_accuracy": 0.9,
                             "val_effect_size": 1.0 + layer + (method == "probe"),
                             "polarity_correct": True, "combined_score": 0.5})
            _js(vdir / "metadata.json", {"model": "google/gemma-2-2b", "method": method,
                                         "layers": {str(la): {"norm": 1.0, "baseline": 0.1} for la in range(4)}})
    _js(ex / "extraction_evaluation.json", {"extraction_model": "m", "component": "residual",
                                            "position": "response[:5]", "all_results": rows,
                                            "activation_norms": {"0": 1.0}})
    _js(ex / "cross_trait_matrix.json", {})
    st = root / "steering"
    _js(st / "demo/optimism/response__5/results.json",
        _results({1: (70.0, 90.0), 2: (95.0, 50.0)}, "response[:5]"))
    _js(st / "demo/optimism/response__5/responses/baseline.json", [{"question": "q", "response": "r"}])
    _js(st / "demo/optimism/response__5/responses/residual/L1_c4.0_2025-01-01_00-00-00.json", [])
    # the oldest layout: no position level (the old schema's runs record theirs)
    _js(st / "behavior/sycophancy/results.json",
        _results({3: (60.0, 80.0)}, "response[:5]" if schema == "old" else None))
    _js(st / "behavior/sycophancy/responses/baseline.json", [])
    inf = root / "inference"
    sets = ["demo"] + (["demo_sycophant"] if schema != "old" else [])
    for s in sets:
        for pid in (1, 2):
            _pt(inf / f"raw/residual/{s}/{pid}.pt", _raw_capture(g, 4, 3))
            _js(inf / f"responses/{s}/{pid}.json", {"prompt": {"text": "p"}, "response": {"text": "r"},
                                                    "metadata": {"prompt_id": pid}})
            _js(inf / f"demo/optimism/residual_stream/{s}/{pid}.json", {"projections": {}})
        _js(inf / f"demo/optimism/residual_stream/{s}/1_probe_L2.json", {"projections": {}})
    _pt(inf / "raw/residual/_calibration/1.pt", _raw_capture(g, 3, 2))
    _pt(inf / "raw/internals/demo/1_L3.pt", {"prompt_text": "p"})
    _js(inf / "demo/optimism/attn_stream/demo/1.json", {"projections": {}})
    _js(inf / "massive_activations/calibration.json", {"aggregate": {}})
    m = inf / "models" / slug
    _pt(m / "raw/residual/general_questions/1.pt", _raw_capture(g, 3, 3))
    _js(m / "responses/general_questions/1.json", {"prompt": {}, "response": {}})
    _js(m / "demo/optimism/residual_stream/general_questions/1.json", {"projections": {}})
    _js(root / "analysis/per_token/demo/1_attention.json", {})
    (root / "notes.txt").write_text("my notes\n")


def snapshot(*dirs: Path) -> dict[str, str]:
    out = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


OPTS = {"old": [], "intermediate": ["--model-slug", "rm_lora_run=rm_lora", "--set-suffix", "sycophant=rm_lora"]}
NAMES = {"old": "gemma_old", "intermediate": "demo"}


@pytest.fixture(params=["old", "intermediate"])
def old_exp(request, tmp_path):
    schema = request.param
    root = tmp_path / "experiments" / NAMES[schema]
    build_old_tree(root, schema)
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    return schema, root, conf


def run(root: Path, conf: Path, *extra: str, apply: bool = True) -> int:
    args = [str(root), "--conf-dir", str(conf), *extra] + (["--apply"] if apply else [])
    return migrate.main(args)


# --------------------------------------------------------------------------- tests
def test_dry_run_prints_every_file_and_changes_nothing(old_exp, capsys):
    schema, root, conf = old_exp
    before = snapshot(root, conf)
    assert run(root, conf, *OPTS[schema], apply=False) == 0
    out = capsys.readouterr().out
    assert snapshot(root, conf) == before
    for p in before:
        if p.startswith(str(root)):
            assert Path(p).relative_to(root).as_posix() in out  # every file is in the plan
    assert "dry run" in out and "convert extraction/demo/optimism/vectors/response__5/residual/probe/layer0.pt" in out
    assert "leave   notes.txt" in out


def test_migration_accounts_for_every_file_and_is_a_noop_the_second_time(old_exp, capsys):
    schema, root, conf = old_exp
    before = snapshot(root)
    assert run(root, conf, *OPTS[schema]) == 0
    manifest = json.loads((root / ".migration/manifest.json").read_text())
    sources = {e["source"] for e in manifest["files"]}
    left = {e["path"] for e in manifest["left_in_place"]}
    original = {Path(p).relative_to(root).as_posix(): h for p, h in before.items()}
    assert sources | left == set(original) and not sources & left  # every file accounted for once
    for e in manifest["files"]:
        assert e["status"] == "done" and e["sha256"] == original[e["source"]]
        assert not (root / e["source"]).exists()
        dst = root / e["destination"]
        assert dst.is_file()
        if e["action"] == "move":
            assert sha(dst) == e["sha256"]  # moved bytes unchanged
        else:
            assert sha(root / e["original"]) == e["sha256"]  # original bytes kept
    for e in manifest["left_in_place"]:
        assert sha(root / e["path"]) == original[e["path"]] == e["sha256"]
    # a second run changes nothing, the preset and manifest included
    after = snapshot(root, conf)
    capsys.readouterr()
    assert run(root, conf, *OPTS[schema]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(root, conf) == after


def test_tree_matches_the_variant_layout(old_exp):
    schema, root, conf = old_exp
    assert run(root, conf, *OPTS[schema]) == 0
    lay = Layout(root.parent, root.name)
    vx, va = "base", "instruct"
    vc = "base" if schema == "old" else "rm_lora"
    expect = []
    for trait in TRAITS:
        expect += [lay.responses_dir(trait, vx) / "pos.json", lay.vetting_dir(trait, vx) / "response_scores.json",
                   lay.logit_lens_path(trait, vx),
                   lay.activations_dir(trait, vx, "response[:5]", "residual") / "metadata.json",
                   lay.vectors_dir(trait, vx, "response[:5]", "residual", "probe") / "metadata.json"]
        expect += [lay.vector_path(trait, vx, "response[:5]", "residual", m, la)
                   for m in ("mean_diff", "probe") for la in range(4)]
    acts = lay.activations_dir("demo/optimism", vx, "response[:5]", "residual")
    expect += [acts / "train.safetensors", acts / "val.safetensors"]
    kept = lay.activations_dir("behavior/sycophancy", vx, "response[:5]", "residual")
    expect += [kept / "train_all_layers.pt", kept / "val.safetensors"]  # train counts do not add up
    expect += [lay.evaluation_path(vx), lay.results_path("demo/optimism", va, "response[:5]", "steering"),
               lay.baseline_path("demo/optimism", va, "response[:5]", "steering"),
               lay.run_responses_path("demo/optimism", va, "response[:5]", "steering", "residual", 1,
                                      "4.0", "2025-01-01_00-00-00")]
    legacy_pos = "response[:5]" if schema == "old" else migrate.DEFAULT_LEGACY_STEERING_POSITION
    expect += [lay.results_path("behavior/sycophancy", va, legacy_pos, "steering"),
               lay.baseline_path("behavior/sycophancy", va, legacy_pos, "steering")]
    for pid in (1, 2):
        expect += [lay.raw_path(va, "demo", pid), lay.inference_response_path(va, "demo", pid),
                   lay.projection_path(va, "demo/optimism", "demo", pid)]
    expect += [lay.projection_path(va, "demo/optimism", "demo", "1_probe_L2"),
               lay.raw_path(va, "calibration", 1), lay.massive_activations_dir(va) / "calibration.json",
               lay.raw_path(vc, "general_questions", 1), lay.inference_response_path(vc, "general_questions", 1),
               lay.projection_path(vc, "demo/optimism", "general_questions", 1)]
    if schema != "old":  # demo_sycophant -> rm_lora's demo
        expect += [lay.raw_path("rm_lora", "demo", 1), lay.projection_path("rm_lora", "demo/optimism", "demo", 2)]
    missing = [p.relative_to(root).as_posix() for p in expect if not p.is_file()]
    assert not missing
    # nothing of the old layout is left but what the plan listed
    for gone in ("inference/raw", "inference/models", "inference/responses", "inference/demo",
                 "extraction/demo/optimism/vectors", "steering/demo/optimism/response__5"):
        assert not (root / gone).exists()
    assert (root / "notes.txt").is_file() and (root / "analysis/per_token/demo/1_attention.json").is_file()
    # files no stage reads are kept under the variant's legacy/
    legacy = lay.inference_legacy_dir(va)
    assert (legacy / "raw/internals/demo/1_L3.pt").is_file()
    assert (legacy / "demo/optimism/attn_stream/demo/1.json").is_file()


def test_converted_tensors_equal_the_originals(old_exp):
    schema, root, conf = old_exp
    old_vec = torch.load(root / "extraction/demo/optimism/vectors/response__5/residual/probe/layer2.pt",
                         weights_only=True)
    old_train = torch.load(root / "extraction/demo/optimism/activations/response__5/residual/train_all_layers.pt",
                           weights_only=True)
    old_raw = torch.load(root / "inference/raw/residual/demo/1.pt", weights_only=True)
    assert run(root, conf, *OPTS[schema]) == 0
    lay = Layout(root.parent, root.name)
    vec, prov = load_vector(lay.vector_path("demo/optimism", "base", "response[:5]", "residual", "probe", 2))
    assert torch.equal(vec, old_vec.float())
    assert prov["model_variant"] == "base" and prov["layer"] == 2 and prov["method"] == "probe"
    assert prov["position"] == "response[:5]" and prov["source_dtype"] == "bfloat16"
    assert prov["migrated_from"].endswith("probe/layer2.pt") and len(prov["source_sha256"]) == 64
    acts, meta = load_tensors(lay.activations_dir("demo/optimism", "base", "response[:5]", "residual")
                              / "train.safetensors")
    assert torch.equal(acts["pos"], old_train[:6]) and torch.equal(acts["neg"], old_train[6:])
    assert (meta["n_pos"], meta["n_neg"]) == (6, 5)
    raw, rmeta = load_tensors(lay.raw_path("instruct", "demo", 1))
    for phase in ("prompt", "response"):
        for comp in ("residual", "attn_out"):
            want = torch.stack([old_raw[phase]["activations"][la][comp] for la in range(N_LAYERS)], dim=1)
            assert torch.equal(raw[f"{phase}.{comp}"], want)
    assert raw["response.residual"].shape == (2, N_LAYERS, D)
    assert rmeta["response_token_ids"] == [0, 1, 2] and "response_rows_note" in rmeta
    assert rmeta["model_variant"] == "instruct" and rmeta["prompt_set"] == "demo"


def test_readers_use_the_migrated_experiment(old_exp):
    schema, root, conf = old_exp
    assert run(root, conf, *OPTS[schema]) == 0
    lay = Layout(root.parent, root.name)
    assert lay.traits() == sorted(TRAITS)
    assert lay.variants("extraction") == ["base"]
    assert lay.variants("steering") == ["instruct"]
    assert set(lay.variants("inference")) == {"instruct", "base" if schema == "old" else "rm_lora"}
    assert len(lay.vector_files("demo/optimism", "base")) == 8
    files = lay.steering_results_files("demo/optimism", "instruct")
    assert [(p, s) for p, s, _ in files] == [("response[:5]", "steering")]
    res = read_results(files[0][2])
    best = best_per_layer(res)
    assert best[1].best.delta == 30.0 and best[2].best is None  # layer 2 is incoherent
    # best vector: steering evidence on the application variant wins
    choice = select_vector(lay, "demo/optimism", extraction_variant="base", application_variant="instruct")
    assert (choice.selection_source, choice.layer, choice.method, choice.score) == ("steering", 1, "probe", 30.0)
    # no coherent steering for this one's position: the migrated evaluation's effect size decides
    choice = select_vector(lay, "behavior/sycophancy", extraction_variant="base", application_variant="base")
    assert (choice.selection_source, choice.layer, choice.method) == ("effect_size", 3, "probe")
    v, _ = load_vector(choice.path)
    assert v.shape == (D,)


def test_preset_is_written_and_composes(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from trait_pipeline import resolvers
    from trait_pipeline.config import validate, variant_spec

    root = tmp_path / "experiments" / "gemma_old"
    build_old_tree(root, "old")
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    assert run(root, conf) == 0
    text = (conf / "experiment/gemma_old.yaml").read_text()
    assert "# @package _global_" in text and "stage_defaults: {extraction: base, application: instruct}" in text
    resolvers.register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            for stage, variant, model, chat in (("extract", "base", "google/gemma-2-2b", False),
                                                ("steer", "instruct", "google/gemma-2-2b-it", True)):
                extra = ["layer=3"] if stage == "steer" else []
                cfg = compose(config_name=stage, overrides=["experiment=gemma_old", *extra,
                                                            f"paths.experiments={root.parent}"])
                validate(cfg)
                spec = variant_spec(cfg)
                assert (spec.name, spec.model, spec.use_chat_template) == (variant, model, chat)
                assert cfg.trait == "behavior/sycophancy"  # the first migrated trait
                assert cfg.output_dir.startswith(str(root / ("extraction" if stage == "extract" else "steering")))
    finally:
        GlobalHydra.instance().clear()


def test_existing_preset_that_agrees_is_kept_and_one_that_disagrees_stops(tmp_path, capsys):
    # `demo` exists in conf/experiment and defines the same models: kept as it is
    root = tmp_path / "experiments" / "demo"
    build_old_tree(root, "intermediate")
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    preset = (conf / "experiment/demo.yaml").read_text()
    assert run(root, conf, *OPTS["intermediate"]) == 0
    assert (conf / "experiment/demo.yaml").read_text() == preset
    # rm_syco's preset loads other models: a conflict, nothing moves
    other = tmp_path / "experiments" / "rm_syco"
    build_old_tree(other, "old")
    before = snapshot(other, conf)
    capsys.readouterr()
    assert run(other, conf) == 2
    err = capsys.readouterr()
    assert "rm_syco.yaml exists and disagrees" in err.out and "nothing was moved" in err.err
    assert snapshot(other, conf) == before


def test_conflicting_destination_stops_before_anything_moves(old_exp, capsys):
    schema, root, conf = old_exp
    lay = Layout(root.parent, root.name)
    clash = lay.inference_response_path("instruct", "demo", 2)
    clash.parent.mkdir(parents=True)
    clash.write_text('{"other": true}')
    before = snapshot(root, conf)
    assert run(root, conf, *OPTS[schema]) == 2
    out = capsys.readouterr()
    assert "conflict: inference/instruct/responses/demo/2.json exists with different content" in out.out
    assert "nothing was moved" in out.err
    assert snapshot(root, conf) == before
    assert not (root / ".migration").exists()


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker if ever unpickled


def test_pt_holding_a_non_tensor_object_is_refused(tmp_path, capsys):
    root = tmp_path / "experiments" / "gemma_old"
    build_old_tree(root, "old")
    conf = tmp_path / "conf"
    conf.mkdir()
    marker = tmp_path / "unpickled"
    bad = root / "extraction/demo/optimism/vectors/response__5/residual/probe/layer1.pt"
    torch.save(_Evil(str(marker)), bad)
    wrong = root / "extraction/demo/optimism/vectors/response__5/residual/probe/layer3.pt"
    torch.save({"vector": torch.ones(D)}, wrong)  # loads, but is not a tensor
    before = snapshot(root)
    assert run(root, conf) == 2
    out = capsys.readouterr().out
    assert "probe/layer1.pt: not a plain tensor file; torch.load(weights_only=True) refused it" in out
    assert "probe/layer3.pt: expected a 1-D tensor (a trait vector), found dict" in out
    assert not marker.exists()
    assert snapshot(root) == before and not (conf / "experiment").exists()


def test_unknown_model_slug_stops_and_the_option_maps_it(tmp_path, capsys):
    root = tmp_path / "experiments" / "demo"
    build_old_tree(root, "intermediate")
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    before = snapshot(root, conf)
    assert run(root, conf, "--set-suffix", "sycophant=rm_lora") == 2
    out = capsys.readouterr().out
    assert "inference/models/rm_lora_run: unknown model slug 'rm_lora_run'" in out
    assert "--model-slug rm_lora_run=VARIANT" in out
    assert snapshot(root, conf) == before
    assert run(root, conf, "--model-slug", "rm_lora_run=nope") == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err
    assert run(root, conf, *OPTS["intermediate"]) == 0


def test_interrupted_run_resumes(old_exp, monkeypatch):
    schema, root, conf = old_exp
    before = snapshot(root)
    real = migrate._convert
    calls = {"n": 0}

    def flaky(plan, a):
        calls["n"] += 1
        if calls["n"] == 5:  # killed after writing the new file, before dropping the source
            src = root / a.src
            data = src.read_bytes()
            real(plan, a)
            src.write_bytes(data)
            raise KeyboardInterrupt
        return real(plan, a)

    monkeypatch.setattr(migrate, "_convert", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(root, conf, *OPTS[schema])
    manifest = json.loads((root / ".migration/manifest.json").read_text())
    assert {e["status"] for e in manifest["files"]} == {"done", "pending"}
    # a hard kill may leave the manifest stale: the rerun re-checks the disk, not the statuses
    for e in manifest["files"]:
        e["status"] = "pending"
    (root / ".migration/manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(migrate, "_convert", real)
    assert run(root, conf, *OPTS[schema]) == 0
    manifest = json.loads((root / ".migration/manifest.json").read_text())
    original = {Path(p).relative_to(root).as_posix(): h for p, h in before.items()}
    assert {e["source"] for e in manifest["files"]} | {e["path"] for e in manifest["left_in_place"]} == set(original)
    for e in manifest["files"]:
        assert e["status"] == "done" and e["sha256"] == original[e["source"]]
        held = root / (e.get("original") or e["destination"])
        assert sha(held) == e["sha256"] and (root / e["destination"]).is_file()
    assert len(manifest["runs"]) == 2


def test_command_line_entry_point(tmp_path):
    root = tmp_path / "experiments" / "gemma_old"
    build_old_tree(root, "old")
    conf = tmp_path / "conf"
    conf.mkdir()
    proc = subprocess.run([sys.executable, "-m", "trait_pipeline.migrate", "gemma_old", "--experiments",
                           str(tmp_path / "experiments"), "--conf-dir", str(conf), "-q"],
                          capture_output=True, text=True, check=False, cwd=PROJECT_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "to move" in proc.stdout and "dry run" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "trait_pipeline.migrate", "nosuch", "--experiments",
                           str(tmp_path / "experiments")], capture_output=True, text=True, check=False, cwd=PROJECT_ROOT,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no experiment 'nosuch'")


def _infer_ready() -> bool:
    from trait_pipeline import infer

    return "NotImplementedError" not in inspect.getsource(infer)


def test_real_demo_captures_survive_migration(tmp_path):
    """Old-format .pt files made from the demo family's real activations read back the same."""
    from trait_pipeline.config import VariantSpec
    from trait_pipeline.demo_family import ensure_demo_family
    from trait_pipeline.models import load_variant
    from trait_pipeline.projection import project_tokens
    from trait_pipeline.token_capture import capture_generate

    ensure_demo_family()
    lm = load_variant(VariantSpec("instruct", "demo:instruct", dtype="float32"), device="cpu")
    prompts = json.loads((PROJECT_ROOT / "datasets/inference/demo.json").read_text())["prompts"][:2]
    seqs = capture_generate(lm, lm.encode([lm.format_prompt(p["text"]) for p in prompts]),
                            components=["residual"], max_new_tokens=6)
    pos = (PROJECT_ROOT / "datasets/traits/demo/optimism/positive.txt").read_text().splitlines()[:4]
    neg = (PROJECT_ROOT / "datasets/traits/demo/optimism/negative.txt").read_text().splitlines()[:4]
    mean_at = {}
    for name, lines in (("pos", pos), ("neg", neg)):
        caps = capture_generate(lm, lm.encode(lines), components=["residual"], max_new_tokens=1)
        mean_at[name] = torch.stack([c.prompt["residual"][:, 10].mean(0) for c in caps]).mean(0)
    vector = mean_at["pos"] - mean_at["neg"]

    root = tmp_path / "experiments" / "demo"
    _js(root / "config.json", {"defaults": {"extraction": "instruct", "application": "instruct"},
                               "model_variants": {"instruct": {"model": "demo:instruct"}}})
    _pt(root / "extraction/demo/optimism/vectors/response__5/residual/mean_diff/layer10.pt", vector.clone())
    _js(root / "extraction/extraction_evaluation.json", {"all_results": [
        {"trait": "demo/optimism", "method": "mean_diff", "layer": 10, "component": "residual",
         "position": "response[:5]", "val_effect_size": 2.0}]})
    for p, seq in zip(prompts, seqs):
        old = {ph: {"text": "", "tokens": [], "token_ids": ids,
                    "activations": {la: {"residual": acts["residual"][:, la].clone()} for la in range(lm.n_layers)}}
               for ph, ids, acts in (("prompt", seq.prompt_ids, seq.prompt), ("response", seq.response_ids, seq.response))}
        _pt(root / f"inference/raw/residual/demo/{p['id']}.pt", old)
    conf = tmp_path / "conf"
    conf.mkdir()
    assert run(root, conf, "--no-preset") == 0

    lay = Layout(root.parent, "demo")
    choice = select_vector(lay, "demo/optimism", extraction_variant="instruct", application_variant="instruct")
    assert (choice.layer, choice.selection_source) == (10, "effect_size")
    vec, _ = load_vector(choice.path)
    for p, seq in zip(prompts, seqs):
        raw, meta = load_tensors(lay.raw_path("instruct", "demo", p["id"]))
        assert meta["response_token_ids"] == seq.response_ids
        got = project_tokens(raw["response.residual"], vec, layer=10)
        want = project_tokens(seq.response["residual"], vector, layer=10)
        assert got.projections == pytest.approx(want.projections, abs=1e-5)
        assert len(got.projections) == len(seq.response_ids)
    with safe_open(str(choice.path), framework="pt") as f:
        assert json.loads(f.metadata()["model"]) == "demo:instruct"


@pytest.mark.skipif(not _infer_ready(), reason="the infer stage is not written yet")
def test_infer_runs_on_a_migrated_experiment(tmp_path):
    root = tmp_path / "experiments" / "demo"
    build_old_tree(root, "intermediate")
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    assert run(root, conf, *OPTS["intermediate"]) == 0  # the shipped demo preset agrees: kept
    # the migrated vectors are random, so pick one by hand; infer must find it under `base`
    env = {**__import__("os").environ, "TRAIT_PIPELINE_EXPERIMENTS": str(tmp_path / "experiments")}
    proc = subprocess.run([sys.executable, "-m", "trait_pipeline.infer", "trait=demo/optimism",
                           "prompt_set=demo", "limit=1", "layer=2", "method=probe", "position=response[:5]",
                           "generation.max_new_tokens=4"],
                          capture_output=True, text=True, check=False, cwd=PROJECT_ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lay = Layout(root.parent, "demo")
    out = json.loads(lay.projection_path("instruct", "demo/optimism", "demo", 1).read_text())
    md = out["metadata"]
    assert out["schema_version"] == 1 and md["raw"] == "inference/instruct/raw/demo/1.safetensors"
    assert md["vector_source"]["path"] == (
        "extraction/demo/optimism/base/vectors/response__5/residual/probe/layer2.safetensors")
    assert md["model"] == "demo:instruct"
    # infer projected the migrated capture instead of generating a new one
    _, raw_meta = load_tensors(lay.raw_path("instruct", "demo", 1))
    assert raw_meta["migrated_from"] == "inference/raw/residual/demo/1.pt"
    assert len(out["projections"]["response"]) == 2  # the original's rows, as captured


def test_two_sources_for_one_destination_is_a_conflict(tmp_path, capsys):
    root = tmp_path / "experiments" / "gemma_old"
    build_old_tree(root, "old")
    # the legacy file records response[:5], and a response__5 folder exists too
    _js(root / "steering/behavior/sycophancy/response__5/results.json", _results({1: (50.0, 90.0)}, None))
    conf = tmp_path / "conf"
    conf.mkdir()
    before = snapshot(root)
    assert run(root, conf) == 2
    out = capsys.readouterr().out
    assert ("conflict: steering/behavior/sycophancy/instruct/response__5/steering/results.json would receive "
            "several files (steering/behavior/sycophancy/results.json, "
            "steering/behavior/sycophancy/response__5/results.json)") in out
    assert snapshot(root) == before
    # the position the runs record wins over --steering-position (it says which vectors were used)
    assert run(root, conf, "--steering-position", "response[:]") == 2
    assert snapshot(root) == before


def test_dashboard_api_reads_the_migrated_experiment(tmp_path):
    from fastapi.testclient import TestClient

    from trait_pipeline.serve import create_app

    root = tmp_path / "experiments" / "gemma_old"
    build_old_tree(root, "old")
    conf = tmp_path / "conf"
    conf.mkdir()
    assert run(root, conf) == 0
    client = TestClient(create_app(root.parent))

    def ok(url, **params):
        r = client.get(url, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    assert "gemma_old" in json.dumps(ok("/api/experiments"))
    assert "demo/optimism" in json.dumps(ok("/api/experiments/gemma_old/extraction/base"))
    assert "response" in json.dumps(ok("/api/experiments/gemma_old/steering/instruct", trait="demo/optimism"))
    res = ok("/api/experiments/gemma_old/steering/instruct/results", trait="demo/optimism",
             position="response[:5]", prompt_set="steering")
    assert res["baseline"]["trait_mean"] == 40.0
    assert res["groups"][0]["layers"] == [1, 2] and res["groups"][0]["delta"] == [[30.0], [55.0]]
    assert "demo" in json.dumps(ok("/api/experiments/gemma_old/inference/instruct"))


def test_an_added_variant_is_selectable_by_name(tmp_path, monkeypatch):
    """``--add-variant cmp=...`` writes a preset entry; ``model_variant=cmp`` then selects it."""
    root = tmp_path / "experiments" / "gemma_old"
    build_old_tree(root, "old")
    project = tmp_path / "project"  # the user's project dir: migrate writes ./conf/experiment/
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.delenv("TRAIT_PIPELINE_PROJECT", raising=False)
    assert migrate.main(["gemma_old", "--apply", "--experiments", str(tmp_path / "experiments"),
                         "--add-variant", "cmp=google/gemma-2-9b-it+org/cmp-adapter"]) == 0
    preset = project / "conf" / "experiment" / "gemma_old.yaml"
    assert "cmp:" in preset.read_text()
    assert not list((project / "conf").glob("model_variant/*"))  # no variant file was needed
    env = {**__import__("os").environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("TRAIT_PIPELINE_PROJECT", None)

    def steer(*args):
        return subprocess.run([sys.executable, "-m", "trait_pipeline.steer", "experiment=gemma_old",
                               "layer=3", *args], capture_output=True, text=True, check=False,
                              cwd=project, env=env, timeout=120)

    r = steer("model_variant=cmp", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    from omegaconf import OmegaConf

    mv = OmegaConf.create(r.stdout).model_variant
    assert (mv.name, mv.model, mv.lora, mv.use_chat_template) == (
        "cmp", "google/gemma-2-9b-it", "org/cmp-adapter", True)
    r = steer("model_variant=cmpx", "--cfg", "job")
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: model_variant 'cmpx' is not defined by experiment 'gemma_old'; "
        "it defines: base, cmp, instruct")
