"""The resolved snapshot each job writes: the adapter difference is visible, it is what the job
ran with (not today's presets or environment), and it holds no secret."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from trait_pipeline.layout import CONF_DIR, PROJECT_ROOT
from trait_pipeline.review import run_record, snapshot
from trait_pipeline.review.compose import composed
from trait_pipeline.review.diff import run_folder


def job_dir(sweep: Path, num: int) -> Path:
    import json

    return Path(json.loads((sweep / "jobs" / f"{num}.json").read_text())["output_dir"])


def test_snapshot_shows_the_adapter_difference(review_runs):
    a = snapshot.read(snapshot.snapshot_path(job_dir(review_runs["sweep"], 0)))
    b = snapshot.read(snapshot.snapshot_path(job_dir(review_runs["sweep"], 1)))
    assert (a["config"]["model_variant"]["name"], a["config"]["model_variant"]["lora"]) == ("instruct", None)
    assert (b["config"]["model_variant"]["name"], b["config"]["model_variant"]["lora"]) == ("rm_lora", "demo:rm_lora")
    assert a["config"]["model_variant"]["model"] == b["config"]["model_variant"]["model"] == "demo:instruct"
    assert "${" not in yaml.safe_dump(b["config"])  # every interpolation resolved
    # what was loaded: the same base weights, and only rm_lora has an adapter, hashed by content
    assert a["provenance"]["model"]["content_sha256"] == b["provenance"]["model"]["content_sha256"]
    assert "adapter" not in a["provenance"]
    adapter = b["provenance"]["adapter"]
    assert adapter["ref"] == "demo:rm_lora"
    assert adapter["content_sha256"] == snapshot.content_hash(adapter["path"])["content_sha256"]
    assert b["provenance"]["runtime"] == {"device": "cpu", "dtype": "float32"}
    commit = b["provenance"]["project"]["git_commit"]
    if commit is not None:  # the checkout's HEAD then (HEAD may have moved on since)
        assert subprocess.run(["git", "-C", str(PROJECT_ROOT), "merge-base", "--is-ancestor", commit,
                               "HEAD"], capture_output=True, check=False).returncode == 0
    assert isinstance(b["provenance"]["project"]["git_dirty"], (bool, type(None)))
    assert b["provenance"]["packages"]["torch"] and b["provenance"]["python"]
    data = b["provenance"]["data"]
    assert len(data["trait_datasets"]["demo/optimism"]["content_sha256"]) == 64
    assert data["prompt_sets"]["steering:demo/optimism"]["sha256"]


def test_results_and_metadata_point_at_the_snapshot(review_runs):
    import json

    run = job_dir(review_runs["sweep"], 1)
    results = run.parent.parent / "results.json"
    entry = json.loads(results.read_text())["runs"][0]
    assert (results.parent / entry["snapshot"]).resolve() == snapshot.snapshot_path(run).resolve()
    ext = review_runs["root"] / "demo" / "extraction" / "demo" / "optimism" / "base"
    meta = ext / "responses" / "metadata.json"
    link = json.loads(meta.read_text())["snapshot"]
    assert (meta.parent / link).is_file() and (meta.parent / link).name == "resolved.yaml"
    rec = run_record.read(run)
    assert rec.status == "done" and rec.snapshot == ".hydra/resolved.yaml"
    assert rec.model_variant == "rm_lora" and rec.lora == "demo:rm_lora"


def test_snapshot_is_not_changed_by_todays_environment(review_runs, tmp_path, monkeypatch):
    run = job_dir(review_runs["sweep"], 0)
    before = snapshot.snapshot_path(run).read_bytes()
    ran_with = snapshot.read(snapshot.snapshot_path(run))["config"]["paths"]["cache"]
    monkeypatch.setenv("TRAIT_PIPELINE_CACHE", str(tmp_path / "elsewhere"))
    assert run_folder(run).config["paths"]["cache"] == ran_with != str(tmp_path / "elsewhere")
    assert snapshot.snapshot_path(run).read_bytes() == before
    # what resolving Hydra's unresolved config today would have said instead
    legacy = tmp_path / "legacy_run"
    shutil.copytree(run / ".hydra", legacy / ".hydra")
    (legacy / ".hydra" / "resolved.yaml").unlink()
    side = run_folder(legacy)
    assert side.config["paths"]["cache"] == str(tmp_path / "elsewhere")
    assert side.notes and "today" in side.notes[0]


def test_snapshot_is_not_changed_by_later_preset_edits(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    cfg, _ = composed("steer", ["model_variant=rm_lora"], conf)
    snap_file = snapshot.write(tmp_path / "run", snapshot.build(cfg, stage="steer"))
    preset = conf / "experiment" / "demo.yaml"
    preset.write_text(preset.read_text().replace('lora: "demo:rm_lora"', 'lora: "/adapters/v2"'))
    now, _ = composed("steer", ["model_variant=rm_lora"], conf)
    assert now["model_variant"]["lora"] == "/adapters/v2"
    assert snapshot.read(snap_file)["config"]["model_variant"]["lora"] == "demo:rm_lora"


def test_no_secret_in_any_file_the_jobs_wrote(review_runs):
    key = review_runs["key"].encode()
    leaked = [p for p in review_runs["root"].rglob("*") if p.is_file() and key in p.read_bytes()]
    assert leaked == []
    ext = review_runs["root"] / "demo" / "extraction" / "demo" / "optimism" / "base" / "runs"
    snap = snapshot.read(next(ext.glob("*/.hydra/resolved.yaml")))
    assert snap["config"]["judge"]["api_key_env"] == "OPENAI_API_KEY"  # the name, never the value


def test_redaction_of_secret_keys_and_values(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-1234567890")
    snap = snapshot.build({"judge": {"api_key": "sk-abc", "api_key_env": "OPENAI_API_KEY",
                                     "base_url": "http://x/?t=tok-1234567890"},
                           "generation": {"max_new_tokens": 4}}, stage="steer")
    text = snapshot.dump(snap)
    assert "sk-abc" not in text and "tok-1234567890" not in text
    assert snap["config"]["judge"]["api_key"] == "<redacted>"
    assert snap["config"]["judge"]["api_key_env"] == "OPENAI_API_KEY"
    assert snap["config"]["generation"]["max_new_tokens"] == 4


def test_hub_commit_from_a_local_hub_cache(tmp_path):
    repo = tmp_path / "hub" / "models--org--model"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    assert snapshot.hub_commit("org/model", cache_dir=str(tmp_path / "hub")) == commit
    assert snapshot.hub_commit("org/absent", cache_dir=str(tmp_path / "hub")) is None


def test_content_hash_changes_with_bytes_and_names(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.bin").write_bytes(b"x" * 10)
    h1 = snapshot.content_hash(tmp_path / "m")
    (tmp_path / "m" / "a.bin").write_bytes(b"y" * 10)
    h2 = snapshot.content_hash(tmp_path / "m")
    (tmp_path / "m" / "a.bin").rename(tmp_path / "m" / "b.bin")
    h3 = snapshot.content_hash(tmp_path / "m")
    assert len({h1["content_sha256"], h2["content_sha256"], h3["content_sha256"]}) == 3
    assert h1["hash_method"] == "sha256" and h1["files"] == 1
