"""``trait-pipeline diff --rev REV`` on a temporary git repo holding two commits of a preset."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from trait_pipeline.layout import CONF_DIR
from trait_pipeline.review.diff import main


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"})


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(CONF_DIR, repo / "conf", ignore=shutil.ignore_patterns("local", "site"))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "presets")
    preset = repo / "conf" / "experiment" / "demo.yaml"
    text = preset.read_text()
    assert 'lora: "demo:rm_lora"' in text and "application: instruct" in text
    preset.write_text(text.replace('lora: "demo:rm_lora"', 'lora: "/adapters/rm_lora_v2"')
                      .replace("application: instruct", "application: rm_lora"))
    git(repo, "commit", "-qam", "new adapter; apply to rm_lora by default")
    return repo


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_review_of_a_preset_change(repo, capsys):
    rc, out, err = run(capsys, "--rev", "HEAD~1", "--conf", repo / "conf", "--color", "never")
    assert rc == 1, err
    assert "conf/experiment/demo.yaml" in out.splitlines()[0]
    assert "=== experiment demo" in out and "rm_syco" not in out  # only the changed preset
    blocks = out.split("--- ")[1:]
    lora = next(b for b in blocks if "+model_variant.lora: /adapters/rm_lora_v2" in b)
    assert "steer x rm_lora" in lora and "extract x rm_lora" in lora and "infer x rm_lora" in lora
    assert "-model_variant.lora: demo:rm_lora" in lora
    default = next(b for b in blocks if b.startswith("steer x (default)"))
    assert "-model_variant.name: instruct" in default and "+model_variant.name: rm_lora" in default
    assert "extract x base" in out.split("(unchanged: ")[1]  # base is untouched


def test_review_json_and_filters(repo, capsys):
    rc, out, _ = run(capsys, "--rev", "HEAD~1", "--conf", repo / "conf", "--json", "experiment=demo",
                     "--stage", "steer")
    assert rc == 1
    data = json.loads(out)
    assert data["files"] == ["conf/experiment/demo.yaml"]
    where = [w for c in data["experiments"]["demo"]["changes"] for w in c["where"]]
    assert "steer x rm_lora" in where and all(w.startswith("steer") for w in where)
    rc, out, _ = run(capsys, "--rev", "HEAD~1", "--conf", repo / "conf", "experiment=rm_syco")
    assert rc == 0 and "no change to the selected experiments" in out


def test_no_change_is_exit_0_and_a_stage_file_touches_every_preset(repo, capsys):
    rc, out, _ = run(capsys, "--rev", "HEAD", "--conf", repo / "conf")
    assert rc == 0 and "0 conf file(s) changed" in out
    steer = repo / "conf" / "steer.yaml"
    steer.write_text(steer.read_text().replace("min_coherence: 75", "min_coherence: 80"))
    rc, out, _ = run(capsys, "--rev", "HEAD", "--conf", repo / "conf", "--color", "never",
                     "--stage", "steer")
    assert rc == 1
    assert "=== experiment rm_syco" in out and "=== experiment demo" in out
    assert "+min_coherence: 80" in out


@pytest.mark.parametrize("args, words", [
    (["--rev", "no-such-rev"], "unknown git revision 'no-such-rev'"),
    (["--rev", "HEAD", "experiment=nope"], "unknown experiment 'nope'"),
    (["--rev", "HEAD", "trait=x"], "bad filter"),
    (["--rev", "HEAD", "--stage", "bogus"], "unknown stage"),
])
def test_bad_review_input(repo, capsys, args, words):
    rc, _, err = run(capsys, *args, "--conf", repo / "conf")
    assert rc == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1


def test_not_a_git_repo(tmp_path, capsys):
    shutil.copytree(CONF_DIR, tmp_path / "conf")
    rc, _, err = run(capsys, "--rev", "HEAD", "--conf", tmp_path / "conf")
    assert rc == 2 and "git" in err
