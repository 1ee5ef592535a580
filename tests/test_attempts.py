"""Run folders of killed attempts (trait_pipeline.launch.attempts): merged into run.json, never over a result."""

import json

from trait_pipeline.jsonio import write_json
from trait_pipeline.launch.attempts import mark_killed, read_record


def test_mark_killed_merges_into_the_run_record(tmp_path):
    write_json(tmp_path / "run.json", {"schema_version": 1, "status": "running", "stage": "steer",
                                       "overrides": ["layer=10"], "started": "t0"})
    assert mark_killed(tmp_path, signal="SIGTERM", attempt=1, sweep_id="2026-11-29_21-00-00")
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["status"] == "killed" and rec["signal"] == "SIGTERM" and rec["attempt"] == 1
    assert rec["sweep_id"] == "2026-11-29_21-00-00" and rec["ended"]
    assert rec["stage"] == "steer" and rec["overrides"] == ["layer=10"] and rec["started"] == "t0"  # kept


def test_a_finished_run_is_never_marked(tmp_path):
    write_json(tmp_path / "run.json", {"status": "done", "result": {"x": 1}})
    assert not mark_killed(tmp_path, signal="SIGTERM", attempt=1, sweep_id="s", force=True)
    assert read_record(tmp_path)["status"] == "done"
    write_json(tmp_path / "run.json", {"status": "failed", "error": "boom"})
    assert not mark_killed(tmp_path, signal="SIGTERM", attempt=1, sweep_id="s")
    # the signal stopped it, and the failure was only the unwinding: force says so
    assert mark_killed(tmp_path, signal="SIGUSR2", attempt=2, sweep_id="s", force=True)
    assert read_record(tmp_path)["signal"] == "SIGUSR2"


def test_no_record_yet_or_no_folder(tmp_path):
    assert mark_killed(tmp_path, signal=None, attempt=None, sweep_id=None)
    rec = read_record(tmp_path)
    assert (rec["status"], rec["signal"], rec["schema_version"]) == ("killed", "unknown", 1)
    assert not mark_killed(tmp_path / "gone", signal="SIGTERM", attempt=1, sweep_id="s")
    assert not (tmp_path / "gone").exists()
