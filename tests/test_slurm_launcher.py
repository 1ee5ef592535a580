"""The SLURM launcher on the one-node cluster (launchers/slurm/up.sh): what a user meets when a
request does not fit, when they press Ctrl-C, when SLURM requeues a job, when the controller
is down. Every test is bounded in time (the ``timeout=`` of each command, and the asserted
durations where the issue asks for them).

The jobs run ``tests/apps/echo_stage.py`` (composed from conf/steer.yaml like the real stage,
so run folders and sweep folders are the real ones); the documented steering sweep itself
runs in test_launchers.py. The tests skip, saying why, when the cluster is not up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trait_pipeline.sweeps import job_states, read_manifest

ROOT = Path(__file__).resolve().parents[1]
ECHO = [sys.executable, str(ROOT / "tests" / "apps" / "echo_stage.py"), "-m", "hydra/launcher=slurm",
        "hydra.launcher.poll_s=0.5"]
STATUS = [sys.executable, "-m", "trait_pipeline", "status"]


def _slurm_up() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo not found: no SLURM client (run launchers/slurm/up.sh as root)"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], check=False, capture_output=True, text=True)
    if out.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in out.stdout.split()):
        return f"SLURM cluster not up (sinfo: {(out.stdout + out.stderr).strip()[:120]}); run launchers/slurm/up.sh"
    return None


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_slurm_up() is not None, reason=_slurm_up() or "")]


def env_for(experiments: Path) -> dict:
    return {**os.environ, "TRAIT_PIPELINE_EXPERIMENTS": str(experiments), "PYTHONUNBUFFERED": "1"}


def run(cmd: list[str], experiments: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    tic = time.monotonic()
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                       env=env_for(experiments), cwd=ROOT)
    return p, time.monotonic() - tic


def sweeps_of(experiments: Path) -> list[Path]:
    root = experiments / "demo" / "sweeps" / "steer"
    return sorted(root.iterdir()) if root.is_dir() else []


def queued(array: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i %T"], check=False,
                         capture_output=True, text=True)
    return out.stdout.splitlines() if out.returncode == 0 else []


def array_of(sweep: Path) -> str:
    return read_manifest(sweep).jobs[0].scheduler_ids[-1].split("_")[0]


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def wait_for(pred, timeout: float, what: str, poll: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    pytest.fail(f"{what}: not within {timeout} s")


# --- requests that can never run ---------------------------------------------------------------
@pytest.mark.parametrize("override,setting", [
    ("hydra.launcher.cpus_per_task=64", "hydra.launcher.cpus_per_task"),
    ("hydra.launcher.gpus_per_node=1", "hydra.launcher.gpus_per_node"),
    ("hydra.launcher.partition=nope", "hydra.launcher.partition"),
    ("hydra.launcher.timeout_min=2000", "hydra.launcher.timeout_min"),  # up.sh's partition: 1 day
])
def test_a_request_that_can_never_run_fails_before_sbatch(tmp_path, override, setting):
    p, took = run([*ECHO, override, "layer=10,20"], tmp_path, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    (line,) = error_lines(p.stderr)
    assert line.startswith("error: ") and setting in line and "nothing was submitted" in line
    assert "Traceback" not in p.stdout + p.stderr
    assert took < 30
    assert not (tmp_path / "demo").exists()  # no sweep folder, nothing half-written


def test_never_reason_after_submit_cancels_then_resubmit_with_an_override_fixes_it(tmp_path):
    """With the check off, SLURM takes cpus_per_task=64 and holds it PENDING (PartitionConfig)
    forever: the launcher cancels the array and exits 2 naming the reason and the setting; the
    status command then resubmits it with cpus_per_task=1, and the manifest records that."""
    p, took = run([*ECHO, "hydra.launcher.precheck=false", "hydra.launcher.cpus_per_task=64", "layer=10,20"],
                  tmp_path, timeout=60)
    assert p.returncode == 2 and took < 30, p.stdout + p.stderr
    (line,) = error_lines(p.stderr)
    assert "SLURM will never start 2 jobs" in line and "PartitionConfig" in line
    assert "change hydra.launcher.cpus_per_task" in line and "--resubmit hydra.launcher.cpus_per_task=" in line
    (sweep,) = sweeps_of(tmp_path)
    assert queued(array_of(sweep)) == []  # cancelled: nothing left in the queue
    st, _ = run([*STATUS, str(sweep)], tmp_path, timeout=60)
    assert st.returncode == 1 and "2 jobs: 2 cancelled" in st.stdout, st.stdout + st.stderr
    assert "SLURM will never start it: PartitionConfig" in st.stdout

    st, took = run([*STATUS, str(sweep), "--resubmit", "hydra.launcher.cpus_per_task=1", "--wait"], tmp_path,
                   timeout=120)
    assert st.returncode == 0, st.stdout + st.stderr
    assert "resubmitted 2 jobs as SLURM array" in st.stdout and "2 jobs: 2 done" in st.stdout
    manifest = read_manifest(sweep)
    assert manifest.launcher_params["cpus_per_task"] == 1
    (entry,) = manifest.resubmissions
    assert entry["overrides"] == ["hydra.launcher.cpus_per_task=1"] and entry["jobs"] == [0, 1]
    assert [len(j.scheduler_ids) for j in manifest.jobs] == [2, 2]


def test_time_above_the_partition_limit_seen_after_submit(tmp_path):
    """sbatch takes it (EnforcePartLimits=NO, SLURM's default) and holds it PartitionTimeLimit."""
    p, took = run([*ECHO, "hydra.launcher.precheck=false", "hydra.launcher.timeout_min=2000", "layer=10,20"],
                  tmp_path, timeout=60)
    assert p.returncode == 2 and took < 30, p.stdout + p.stderr
    (line,) = error_lines(p.stderr)
    # SLURM 22.05 here has also held such a job as PartitionConfig (seen in a full-suite run);
    # either way it never starts, and the sweep must stop fast, cancel and say so in one line
    assert "PartitionTimeLimit" in line or "PartitionConfig" in line, line
    if "PartitionTimeLimit" in line:
        assert "change hydra.launcher.timeout_min" in line, line
        assert "(1440 min)" in line  # the partition's limit, from the check's own reading of it
    assert queued(array_of(sweeps_of(tmp_path)[0])) == []


def test_every_node_drained_is_never(tmp_path):
    """ReqNodeNotAvail with every node of the partition drained: nothing will start it."""
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], check=True, capture_output=True,
                          text=True).stdout.split()[0]
    subprocess.run(["scontrol", "update", f"NodeName={node}", "State=DRAIN", "Reason=trait-pipeline-test"],
                   check=True)
    try:
        p, took = run([*ECHO, "layer=10"], tmp_path, timeout=60)
    finally:
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=True)
    assert p.returncode == 2 and took < 30, p.stdout + p.stderr
    (line,) = error_lines(p.stderr)
    assert "ReqNodeNotAvail" in line and "down or drained" in line, line


# --- sbatch refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,said,hint", [
    (["+hydra.launcher.additional_parameters.bogus-flag=1"], "sbatch: unrecognized option '--bogus-flag=1'",
     "additional_parameters"),
    # one job (not an array) over the node's memory: sbatch itself refuses it
    (["hydra.launcher.precheck=false", "hydra.launcher.mem_gb=999"], "Memory specification can not be satisfied",
     "hydra.launcher.mem_gb"),
])
def test_sbatch_refusal_is_one_line_and_leaves_nothing(tmp_path, overrides, said, hint):
    p, _ = run([*ECHO, *overrides, "layer=10"], tmp_path, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    (line,) = error_lines(p.stderr)
    assert line.startswith("error: sbatch refused the sweep: ") and said in line and hint in line, line
    assert "nothing was submitted" in line and "Traceback" not in p.stdout
    assert sweeps_of(tmp_path) == [] and not (tmp_path / "demo").exists()


@pytest.mark.slow  # stops and restarts the controller (~10 s each way)
def test_with_the_controller_stopped_a_sweep_fails_in_one_line(tmp_path):
    pid = int(Path("/run/slurmctld.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, "slurmctld to stop")
        checked, took1 = run([*ECHO, "layer=10"], tmp_path, timeout=90)             # the check asks first
        raw, took2 = run([*ECHO, "hydra.launcher.precheck=false", "layer=10"], tmp_path, timeout=90)  # sbatch
    finally:
        up = subprocess.run(["bash", str(ROOT / "launchers" / "slurm" / "up.sh")], check=False,
                            capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    for p in (checked, raw):
        assert p.returncode == 2, p.stdout + p.stderr
        (line,) = error_lines(p.stderr)
        assert "Unable to contact slurm controller" in line and "Traceback" not in p.stdout
    assert "cannot ask SLURM about the cluster" in checked.stderr
    assert "sbatch refused the sweep: sbatch: error: Batch job submission failed: Unable to contact slurm " \
           "controller" in raw.stderr
    assert sweeps_of(tmp_path) == []
    assert took1 < 60 and took2 < 60


# --- Ctrl-C -------------------------------------------------------------------------------------
def _interrupt_after_submit(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str, str, Path]:
    # Ctrl-C at a terminal: SIGINT at its default, whatever this test run inherited (a shell
    # starts background jobs with SIGINT ignored, and exec keeps that), so exec through a
    # trampoline that resets it
    reset = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
             "os.execv(sys.argv[1], sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", reset, *ECHO, *extra, "+sleep_s=60", "layer=10,20,30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(tmp_path), cwd=ROOT)
    try:
        def submitted():
            s = sweeps_of(tmp_path)
            return s and (s[0] / "sweep.json").is_file() and read_manifest(s[0]).jobs[0].scheduler_ids and s[0]
        sweep = wait_for(submitted, 180, "the sweep to be submitted")  # Hydra + precheck + sbatch on a loaded CI machine
        time.sleep(1.0)  # in the wait loop
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc, out, err, sweep


def test_ctrl_c_leaves_the_jobs_and_says_how_to_follow_and_cancel_them(tmp_path):
    proc, out, err, sweep = _interrupt_after_submit(tmp_path)
    array = array_of(sweep)
    try:
        assert proc.returncode == 130, out + err
        assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
        assert "interrupted: 3 jobs of the sweep are still queued or running on SLURM" in err
        assert f"follow: trait-pipeline status {sweep}" in err and f"cancel: scancel {array}" in err
        assert len(queued(array)) == 3
        # exit status precedence, on the real queue: one cancelled + others queued -> 3, not 1
        subprocess.run(["scancel", f"{array}_2"], check=True)
        wait_for(lambda: job_states(sweep)[2].state == "cancelled", 30, "job 2 to be cancelled")
        st, _ = run([*STATUS, str(sweep)], tmp_path, timeout=60)
        assert st.returncode == 3 and "1 cancelled" in st.stdout, st.stdout
    finally:
        subprocess.run(["scancel", array], check=False)
    wait_for(lambda: all(s.state == "cancelled" for s in job_states(sweep)), 30, "the array to be cancelled")
    st, _ = run([*STATUS, str(sweep)], tmp_path, timeout=60)
    assert st.returncode == 1 and "3 jobs: 3 cancelled" in st.stdout


def test_ctrl_c_with_cancel_on_interrupt_leaves_nothing_queued(tmp_path):
    proc, out, err, sweep = _interrupt_after_submit(tmp_path, "hydra.launcher.cancel_on_interrupt=true")
    array = array_of(sweep)
    try:
        assert proc.returncode == 130, out + err
        assert "Traceback" not in out + err
        assert "interrupted: cancelled 3 queued or running jobs of the sweep" in err
        assert f"resubmit: trait-pipeline status {sweep} --resubmit" in err
        assert queued(array) == []
    finally:
        subprocess.run(["scancel", array], check=False)


# --- requeue: SLURM first, attempts, killed folders ----------------------------------------------
def test_requeued_job_shows_pending_with_reason_and_attempt_2_and_its_killed_folder_is_marked(tmp_path):
    """``scontrol requeue`` (as on preemption): while SLURM holds the job (BeginTime, ~20 s with
    up.sh's cred_expire) the status says pending, attempt 2, not the old attempt's running; the
    killed attempt's run folder says killed (SIGTERM); the rerun finishes and the sweep exits 0."""
    proc = subprocess.Popen([*ECHO, "+sleep_s=6", "layer=10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env_for(tmp_path), cwd=ROOT)
    try:
        def first_attempt_running():
            s = sweeps_of(tmp_path)
            st = job_states(s[0]) if s and (s[0] / "sweep.json").is_file() else []
            return st and st[0].state == "running" and st[0].attempts == 1 and (s[0], st[0])
        sweep, first = wait_for(first_attempt_running, 90, "the first attempt to run")
        subprocess.run(["scontrol", "requeue", first.scheduler_id], check=True)

        def pending():
            (st,) = job_states(sweep)
            return st.state == "pending" and st
        st = wait_for(pending, 30, "the requeued job to show as pending", poll=0.2)
        assert st.attempt == 2 and st.reason == "BeginTime", st
        shown, _ = run([*STATUS, str(sweep)], tmp_path, timeout=30)
        if job_states(sweep)[0].state == "pending":  # SLURM may have started it meanwhile
            assert shown.returncode == 3 and "(BeginTime, attempt 2)" in shown.stdout, shown.stdout
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    (final,) = job_states(sweep)
    assert final.state == "done" and final.attempts == 2
    killed = json.loads((Path(first.output_dir) / "run.json").read_text())
    assert killed["status"] == "killed" and killed["signal"] == "SIGTERM" and killed["attempt"] == 1
    assert killed["sweep_id"] == sweep.name
    assert Path(final.output_dir) != Path(first.output_dir)
    for folder in (first.output_dir, final.output_dir):  # run folders carry the sweep id
        assert Path(folder).name.endswith(f"_sweep-{sweep.name}_job0")
    rerun = Path(final.output_dir) / "run.json"
    assert not rerun.is_file() or json.loads(rerun.read_text())["status"] != "killed"


# --- the documented command, as written ------------------------------------------------------------
@pytest.mark.slow  # four real steering jobs with the stage's default settings (~1-2 min on 2 cores)
@pytest.mark.heavy
def test_the_documented_sweep_runs_with_the_profiles_defaults(extracted):
    """docs/launchers.md's command, exactly: no hydra.launcher override (the profile's
    cpus_per_task/mem_gb null fit the 2-CPU node); the stage's own defaults too."""
    cmd = [sys.executable, "-m", "trait_pipeline.steer", "-m", "hydra/launcher=slurm",
           "model_variant=instruct,rm_lora", "layer=10,20"]
    assert " ".join(cmd[1:]) in (ROOT / "docs" / "launchers.md").read_text().replace("python", sys.executable)
    p, took = run(cmd, extracted, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (sweep,) = sweeps_of(extracted)
    manifest = read_manifest(sweep)
    assert manifest.launcher_params["cpus_per_task"] is None and manifest.launcher_params["mem_gb"] is None
    assert [s.state for s in job_states(sweep)] == ["done"] * 4
    assert len({j.scheduler_ids[-1].split("_")[0] for j in manifest.jobs}) == 1  # one array
    for variant in ("instruct", "rm_lora"):
        res = json.loads((extracted / "demo" / "steering" / "demo" / "optimism" / variant / "response__5"
                          / "steering" / "results.json").read_text())
        assert res["baselines"], variant
        layers = sorted({v["layer"] for r in res["runs"] for v in r["config"]["vectors"]})
        # rm_lora's baseline is already 100: an upward search has no headroom and runs nothing
        assert layers == ([10, 20] if variant == "instruct" else []), (variant, layers)
    print(f"documented sweep: {took:.0f} s")
