"""The sweep folder's bookkeeping (trait_pipeline.sweeps) and the status command's reading of it.

Real sweeps on both launchers are in test_launchers.py; here the state rules, fast.
"""

import os
import subprocess
import sys

import pytest

from trait_pipeline.errors import PipelineError
from trait_pipeline.jsonio import read_json, write_json
from trait_pipeline.sweep_status import exit_status, find_sweep, format_states, main
from trait_pipeline.sweeps import (
    JobRecord,
    Manifest,
    _expand_tasks,
    job_file,
    job_states,
    mark_job,
    read_manifest,
    summary,
    write_manifest,
)


def make_sweep(path, n=3, launcher="local"):
    jobs = [JobRecord(i, [f"layer={10 * i}", "hydra.verbose=true"]) for i in range(n)]
    write_manifest(path, Manifest(stage="steer", launcher=launcher, jobs=jobs))
    return path


def test_manifest_round_trips_and_names_jobs_by_their_overrides(tmp_path):
    make_sweep(tmp_path)
    m = read_manifest(tmp_path)
    assert m.stage == "steer" and m.schema_version == 1 and len(m.jobs) == 3
    assert m.jobs[1].name == "layer=10"  # hydra.* overrides are not part of a job's name
    with pytest.raises(PipelineError, match="not a sweep folder"):
        read_manifest(tmp_path / "nope")


def test_a_requeued_job_counts_its_attempts(tmp_path):
    make_sweep(tmp_path)
    mark_job(tmp_path, 0, "running", output_dir="/o")
    mark_job(tmp_path, 0, "failed", error="boom")
    mark_job(tmp_path, 0, "running")  # a rerun clears the old error
    rec = read_json(job_file(tmp_path, 0))
    assert (rec["attempts"], rec["state"], rec["error"], rec["output_dir"]) == (2, "running", None, "/o")


def test_states_from_the_jobs_own_files(tmp_path):
    make_sweep(tmp_path, n=4)
    mark_job(tmp_path, 0, "done")
    mark_job(tmp_path, 1, "failed", error="layer 99 is out of range", log="/x/steer.log")
    mark_job(tmp_path, 2, "running")  # this very process: alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    write_json(job_file(tmp_path, 3), {"state": "running", "pid": int(dead),
                                       "host": os.uname().nodename, "attempts": 1})
    states = job_states(tmp_path, query_scheduler=False)
    assert [s.state for s in states] == ["done", "failed", "running", "lost"]
    assert summary(states) == "4 jobs: 1 done, 1 running, 1 failed, 1 lost"
    text = format_states(states)
    assert "#1   failed" in text and "error: layer 99 is out of range  log: /x/steer.log" in text
    assert exit_status(states) == 3  # one still running: the sweep is not over
    assert exit_status(states[:2]) == 1 and exit_status(states[:1]) == 0 and exit_status(states[2:3]) == 3


def _st(*states):
    from trait_pipeline.sweeps import JobStatus

    return [JobStatus(num=i, name=f"layer={i}", state=s) for i, s in enumerate(states)]


@pytest.mark.parametrize("states,code", [
    (("cancelled", "pending", "running"), 3),    # 3 wins over 1: a poller waits for the whole sweep
    (("failed", "lost", "pending"), 3),
    (("failed", "done"), 1), (("cancelled", "done"), 1), (("lost",), 1),
    (("done", "done"), 0),
])
def test_exit_status_precedence_3_then_1_then_0(states, code):
    assert exit_status(_st(*states)) == code


def test_pending_jobs_show_reason_and_attempt():
    states = _st("pending", "running")
    states[0].reason, states[0].attempt = "BeginTime", 2
    states[1].attempt = 2
    text = format_states(states)
    assert "#0   pending    -  layer=0  (BeginTime, attempt 2)" in text
    assert "#1   running    -  layer=1  (attempt 2)" in text


def test_status_command_finds_the_latest_sweep(tmp_path, capsys):
    old, new = make_sweep(tmp_path / "2026-01-01_00-00-00"), make_sweep(tmp_path / "2026-02-01_00-00-00", n=1)
    mark_job(old, 0, "done")
    mark_job(new, 0, "done")
    assert find_sweep(tmp_path) == new and find_sweep(old) == old
    assert main([str(tmp_path)]) == 0
    assert "1 jobs: 1 done" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: no sweep at")


def test_array_task_ranges_of_never_started_tasks():
    assert _expand_tasks("1-3%1") == [1, 2, 3]
    assert _expand_tasks("0,4-5") == [0, 4, 5]
    assert _expand_tasks("7") == [7]


def test_resubmit_overrides_are_launcher_settings_checked_by_type():
    from hydra_plugins.trait_pipeline_launchers.launchers import LocalParams, SlurmParams
    from trait_pipeline.sweep_status import parse_launcher_overrides

    got = parse_launcher_overrides(["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=8",
                                    "hydra.launcher.partition=null", "hydra.launcher.setup=[a, b]"], SlurmParams)
    assert got == {"cpus_per_task": 1, "mem_gb": 8.0, "partition": None, "setup": ["a", "b"]}
    assert parse_launcher_overrides(["hydra.launcher.n_jobs=2"], LocalParams) == {"n_jobs": 2}
    for bad, words in [("layer=5", "only launcher settings can change"),
                       ("hydra.launcher.cpus=1", "unknown setting hydra.launcher.cpus"),
                       ("hydra.launcher.cpus_per_task=abc", "expected int | None"),
                       ("hydra.launcher.wait=3", "expected bool")]:
        with pytest.raises(PipelineError, match=words.replace("|", r"\|")):
            parse_launcher_overrides([bad], SlurmParams)


def test_a_never_started_array_task_gone_from_its_record_is_cancelled(tmp_path, monkeypatch):
    """scancel of one task while the array waits as one record: SLURM drops it from the range
    and keeps no trace; its siblings are still listed (seen on the one-node cluster)."""
    from trait_pipeline import sweeps

    make_sweep(tmp_path, n=3, launcher="slurm")
    m = read_manifest(tmp_path)
    for j in m.jobs:
        j.scheduler_ids = [f"77_{j.num}"]
    write_manifest(tmp_path, m)
    known = {"77_0": sweeps.SchedulerInfo("PENDING", "Resources"),
             "77_1": sweeps.SchedulerInfo("PENDING", "Resources")}
    monkeypatch.setattr(sweeps, "scheduler_info", lambda ids: {i: known[i] for i in ids if i in known})
    monkeypatch.setattr(sweeps, "slurm_available", lambda: True)
    st = job_states(tmp_path)
    assert [s.state for s in st] == ["pending", "pending", "cancelled"]
    assert st[2].reason == "removed from the queue before it started"
    # SLURM knows nothing of the array any more: lost, not cancelled (it may have run elsewhere)
    known.clear()
    assert [s.state for s in job_states(tmp_path)] == ["lost"] * 3
