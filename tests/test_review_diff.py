"""``trait-pipeline diff``: every kind of operand, the exit codes, noise hiding, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trait_pipeline.review.diff import main

REPO = Path(__file__).resolve().parent.parent


def job_dir(sweep: Path, num: int) -> Path:
    return Path(json.loads((sweep / "jobs" / f"{num}.json").read_text())["output_dir"])


def diff(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_two_run_folders_show_the_adapter(review_runs, capsys):
    a, b = job_dir(review_runs["sweep"], 0), job_dir(review_runs["sweep"], 1)
    rc, out, err = diff(capsys, a, b, "--color", "never")
    assert rc == 1, err
    lines = out.splitlines()
    assert "-model_variant.lora: null" in lines and "+model_variant.lora: demo:rm_lora" in lines
    assert "-model_variant.name: instruct" in lines and "+model_variant.name: rm_lora" in lines
    assert "@@ provenance @@" in lines
    assert "+provenance.adapter.ref: demo:rm_lora" in lines
    # noise: output paths that only carry the variant are hidden, --all shows them
    assert not any(line.startswith(("-output_dir", "+output_dir")) for line in lines)
    assert "hidden" in lines[-1]
    rc, out, _ = diff(capsys, a, b, "--all", "--color", "never")
    assert rc == 1 and any(line.startswith("-output_dir: ") for line in out.splitlines())


def test_same_run_is_exit_0(review_runs, capsys):
    a = job_dir(review_runs["sweep"], 0)
    rc, out, _ = diff(capsys, a, a)
    assert rc == 0 and "same resolved config" in out


def test_results_entries_and_sweep_jobs(review_runs, capsys):
    sweep = review_runs["sweep"]
    entries = []
    for num in (0, 1):
        results = job_dir(sweep, num).parent.parent / "results.json"
        entries.append(f"{results}#{json.loads(results.read_text())['runs'][0]['key']}")
    rc, out, err = diff(capsys, *entries, "--color", "never")
    assert rc == 1, err
    assert "+entry.model_variant.lora: demo:rm_lora" in out.splitlines()
    assert "+model_variant.lora: demo:rm_lora" in out.splitlines()
    rc, out, err = diff(capsys, f"{sweep}#0", f"{sweep}#1", "--json")
    assert rc == 1, err
    data = json.loads(out)
    assert data["same"] is False
    assert {"key": "model_variant.lora", "a": None, "b": "demo:rm_lora"} in data["config"]
    assert any(r["key"] == "output_dir" for r in data["hidden"])
    rc, _, _ = diff(capsys, f"{sweep}#1", entries[1])  # the job and its own entry: same snapshot
    assert rc == 1  # (the entry adds its own settings, which the bare job does not have)


def test_two_compositions(capsys):
    rc, out, err = diff(capsys, "steer", "--", "experiment=rm_syco", "model_variant=instruct",
                        "--", "experiment=rm_syco", "model_variant=rm_lora", "--color", "never")
    assert rc == 1, err
    assert "+model_variant.lora: auditing-agents/llama-3.3-70b-dpo-rt-lora" in out.splitlines()
    rc, out, _ = diff(capsys, "extract", "--", "model_variant=base", "--", "model_variant=base")
    assert rc == 0


@pytest.mark.parametrize("args, words", [
    (["/no/such/run", "/no/such/other"], "no run folder"),
    (["only-one"], "two operands"),
    (["--", "a=1", "--", "a=2"], "name the stage"),
    (["steer", "--", "experiment=nope", "--", "experiment=demo"], "unknown experiment 'nope'"),
    (["bogus", "--", "x=1", "--", "x=2"], "unknown stage 'bogus'"),
    (["--bad-flag"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, words):
    rc, out, err = diff(capsys, *args)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err


def test_bad_fragments(review_runs, capsys):
    sweep = review_runs["sweep"]
    results = job_dir(sweep, 0).parent.parent / "results.json"
    for a, words in ((f"{sweep}#9", "no job #9"), (f"{results}#nokey", "no run 'nokey'"),
                     (f"{sweep}#x", "bad job number")):
        rc, _, err = diff(capsys, a, f"{sweep}#0")
        assert rc == 2 and words in err and err.count("\n") == 1


def test_front_door_and_colour(review_runs):
    sweep = review_runs["sweep"]
    out = subprocess.run([sys.executable, "-m", "trait_pipeline", "diff", f"{sweep}#0", f"{sweep}#1",
                          "--color", "always"], capture_output=True, text=True, cwd=REPO,
                         timeout=120, check=False)
    assert out.returncode == 1, out.stderr
    assert "\x1b[32m+model_variant.lora: demo:rm_lora\x1b[0m" in out.stdout
