"""``trait-pipeline runs``: the demo's runs, one line each; killed, lost and empty runs are marked
and never counted as data. Also the run record's own reading and writing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trait_pipeline.review import run_record
from trait_pipeline.review.runs import main, parse_since


def runs(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def tree(review_runs, tmp_path) -> Path:
    root = tmp_path / "experiments"
    shutil.copytree(review_runs["root"], root)
    return root


def _steer_runs(root: Path) -> list[Path]:
    return sorted(root.glob("demo/steering/*/*/*/*/*/runs/*"))


def test_lists_the_runs_with_their_results(tree, capsys):
    rc, out, err = runs(capsys, tree)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 4  # extract, steer x 2, summary
    ext = next(line for line in lines if "  extract" in line)
    assert "demo/optimism" in ext and " base " in ext and "done" in ext and "val acc" in ext
    steer = [line for line in lines if "  steer" in line]
    assert {("instruct" in s, "rm_lora" in s) for s in steer} == {(True, False), (False, True)}
    assert all("delta " in s and "[layer=10 coef=4" in s for s in steer)
    assert lines[-1].startswith("3 runs: 3 with a result (data)")


def test_killed_lost_and_empty_runs_are_marked_and_not_data(tree, capsys):
    inst, lora = _steer_runs(tree)
    run_record.mark(inst, status="killed", signal="SIGTERM", attempt=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rec = run_record.read(lora)
    rec.status, rec.pid, rec.result, rec.ended = "running", dead.pid, None, None
    run_record.write(lora, rec)
    empty = lora.parent / "2026-01-01_00-00-00_0000"  # a folder a failed start left behind
    (empty / ".hydra").mkdir(parents=True)
    (empty / ".hydra" / "config.yaml").write_text("stage: steer\n")
    rc, out, _ = runs(capsys, tree)
    assert rc == 0
    lines = out.splitlines()
    assert any("killed (SIGTERM)" in line for line in lines)
    assert any(" lost " in line for line in lines)
    assert any("no record" in line for line in lines)
    assert lines[-1].startswith("4 runs: 1 with a result (data)")
    rc, out, _ = runs(capsys, tree, "--json")
    data = json.loads(out)
    assert data["n_data"] == 1  # only the extraction
    by_status = {r["status"]: r for r in data["runs"]}
    assert by_status["killed"]["is_data"] is False and by_status["lost"]["recorded_status"] == "running"
    rc, out, _ = runs(capsys, tree, "--data")
    assert out.splitlines()[-1].startswith("1 runs: 1 with a result")


def test_a_rerun_that_measured_nothing_is_done_but_not_data(tree, capsys):
    inst, _ = _steer_runs(tree)
    run_record.mark(inst, result=None)
    _, out, _ = runs(capsys, tree, "variant=instruct")
    assert "done, no result" in out and out.splitlines()[-1].startswith("1 runs: 0 with a result")


def test_filters_since_and_a_sweep_folder(tree, review_runs, capsys):
    _, out, _ = runs(capsys, tree, "variant=rm_lora", "trait=demo/optimism")
    assert out.splitlines()[-1].startswith("1 runs")
    _, out, _ = runs(capsys, tree, "--since", "1w")
    assert out.splitlines()[-1].startswith("3 runs")
    _, out, _ = runs(capsys, tree, "--since", "2999-01-01")
    assert out.splitlines()[-1].startswith("0 runs")
    sweep = next((tree / "demo" / "sweeps" / "steer").iterdir())
    # the sweep's jobs point at the original tree's run folders
    _, out, _ = runs(capsys, sweep)
    assert out.splitlines()[-1].startswith("2 runs")


@pytest.mark.parametrize("args, words", [
    (["colour=red"], "unknown filter 'colour'"),
    (["--since", "yesterday"], "bad --since"),
    (["/no/such/folder"], "no such folder"),
])
def test_bad_input(capsys, args, words):
    rc, _, err = runs(capsys, *args)
    assert rc == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1


def test_parse_since_relative():
    import datetime as dt

    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    assert parse_since("30m", now) == now - dt.timedelta(minutes=30)
    assert parse_since("2h", now) == now - dt.timedelta(hours=2)


def test_record_round_trip_keeps_other_writers_keys(tmp_path):
    rec = run_record.RunRecord(status="running", stage="infer", experiment="demo",
                               model_variant="base", trait=None, overrides=["a=1"])
    run_record.write(tmp_path, rec)
    data = json.loads((tmp_path / "run.json").read_text())
    data["requeued_from"] = "123_4"  # e.g. the SLURM launcher's own field
    (tmp_path / "run.json").write_text(json.dumps(data))
    run_record.mark(tmp_path, status="killed", signal="SIGUSR2", attempt=2)
    again = json.loads((tmp_path / "run.json").read_text())
    assert again["requeued_from"] == "123_4" and again["status"] == "killed"
    assert again["attempt"] == 2 and again["ended"]
    assert run_record.is_data(run_record.read(tmp_path)) is False
