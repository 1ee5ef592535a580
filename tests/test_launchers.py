"""The launchers (hydra/launcher=local|slurm) and the sweep status command, on real sweeps.

SLURM tests need the one-node cluster of launchers/slurm/up.sh (``.ci/run`` starts it) and
skip, saying so, when ``sinfo`` is missing or the node is not up. The steering sweeps run the
real steer stage on the demo family with tiny settings; their vectors are written by
``tests/infer_helpers.write_demo_vectors`` (real activations of demo:base, the extraction
stage's file format) so the tests need not run a whole extraction.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trait_pipeline.sweeps import job_states, read_manifest

ROOT = Path(__file__).resolve().parents[1]
ECHO = [sys.executable, str(ROOT / "tests" / "apps" / "echo_stage.py")]
STEER = [sys.executable, "-m", "trait_pipeline.steer"]
STATUS = [sys.executable, "-m", "trait_pipeline.sweep_status"]
TRAIT = "demo/optimism"
# 10 tokens: shorter answers hold no word the offline judge can score, and an unjudged baseline
# is (rightly) never stored
STEER_TINY = ["questions=2", "coef=4", "generation.max_new_tokens=10", "position=all[:]", "device=cpu"]
# the slurm profile as it ships (cpus_per_task/mem_gb null: the cluster's defaults), polled faster
SLURM_TINY = ["hydra/launcher=slurm", "hydra.launcher.poll_s=0.5"]


def _slurm_up() -> str | None:
    """None when the cluster answers, else why the SLURM tests skip."""
    if shutil.which("sinfo") is None:
        return "sinfo not found: no SLURM client (run launchers/slurm/up.sh)"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], check=False, capture_output=True, text=True)
    if out.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in out.stdout.split()):
        return f"SLURM cluster not up (sinfo: {(out.stdout + out.stderr).strip()[:120]}); run launchers/slurm/up.sh"
    return None


needs_slurm = pytest.mark.skipif(_slurm_up() is not None, reason=_slurm_up() or "")


def run(cmd: list[str], experiments: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAIT_PIPELINE_EXPERIMENTS": str(experiments), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def the_sweep(experiments: Path, stage: str = "steer") -> Path:
    sweeps = sorted((experiments / "demo" / "sweeps" / stage).iterdir())
    return sweeps[-1]


def results(experiments: Path, variant: str) -> dict:
    path = experiments / "demo" / "steering" / TRAIT / variant / "all_all" / "steering" / "results.json"
    return json.loads(path.read_text())


def runs_by_layer(res: dict) -> dict[int, dict]:
    out = {}
    for r in res["runs"]:
        (vec,) = r["config"]["vectors"]
        assert vec["layer"] not in out, f"layer {vec['layer']} run twice: {res['runs']}"
        out[vec["layer"]] = r
    return out


def comparable(res: dict) -> dict:
    """What must match between two runs of the same sweep (not timestamps, not paths)."""
    b = res["baseline"]
    return {
        "baseline": (b["key"], b["trait_mean"], b["coherence_mean"], b["n"]),
        "runs": sorted((r["key"], json.dumps(r["config"], sort_keys=True), r["result"]["trait_mean"],
                        r["result"]["coherence_mean"], r["result"]["n"]) for r in res["runs"]),
    }


def result_files(variant_dir: Path) -> dict[str, object]:
    """Every result file of a variant by name, timestamps cut out -> its responses or kind."""
    out = {}
    for q in variant_dir.rglob("*"):
        if q.is_file() and "runs" not in q.relative_to(variant_dir).parts:
            name = re.sub(r"_\d{8}-\d{6}_", "_", q.relative_to(variant_dir).as_posix())
            out[name] = json.loads(q.read_text()).get("responses") if q.name.endswith(".json") and "responses" in q.parts else q.suffix
    return out


@pytest.fixture(scope="module")
def vectors_src(tmp_path_factory) -> Path:
    """An experiments dir holding probe vectors of demo:base at layers 10 and 20."""
    sys.path.insert(0, str(ROOT / "tests"))
    from infer_helpers import write_demo_vectors

    root = tmp_path_factory.mktemp("vectors")
    write_demo_vectors(root, layers=(10, 20), methods=("probe",))
    return root


def experiments_with_vectors(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- local launcher (no SLURM needed) -----------------------------------------------------------
def test_local_sweep_names_failed_job_and_logs_traceback(tmp_path):
    p = run([*ECHO, "-m", "hydra/launcher=local", "model_variant=instruct,rm_lora", "layer=10,99"],
            tmp_path, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "2 of 4 jobs of the sweep did not finish" in p.stderr
    assert "#1 model_variant=instruct layer=99: failed: ValueError: layer 99 is out of range" in p.stderr
    assert "#3 model_variant=rm_lora layer=99: failed: ValueError" in p.stderr
    sweep = the_sweep(tmp_path)
    assert {"multirun.yaml", "sweep.json", "jobs"} <= {q.name for q in sweep.iterdir()}
    states = {s.num: s for s in job_states(sweep)}
    assert [states[i].state for i in range(4)] == ["done", "failed", "done", "failed"]
    for num, variant in [(1, "instruct"), (3, "rm_lora")]:
        log = Path(states[num].log)
        assert f"/steering/{TRAIT}/{variant}/" in str(log)  # the job log sits under its variant
        text = log.read_text()
        assert "Traceback (most recent call last)" in text and "ValueError: layer 99" in text
    for variant in ("instruct", "rm_lora"):
        out = tmp_path / "demo" / "steering" / TRAIT / variant / "all_all"
        assert not out.exists()  # the default position is response[:5]
        echo = tmp_path / "demo" / "steering" / TRAIT / variant / "response__5" / "steering" / "echo_L10.json"
        assert json.loads(echo.read_text())["variant"] == variant
    # sweep-level files never land in a variant's folder
    assert not list((tmp_path / "demo" / "steering").rglob("multirun.yaml"))
    st = run([*STATUS, str(sweep.parent)], tmp_path, timeout=60)
    assert st.returncode == 1 and "4 jobs: 2 done, 2 failed" in st.stdout, st.stdout + st.stderr


def test_resubmit_with_a_launcher_override_is_recorded(tmp_path):
    p = run([*ECHO, "-m", "hydra/launcher=local", "layer=10,99"], tmp_path, timeout=120)
    assert p.returncode == 1
    sweep = the_sweep(tmp_path)
    bad = run([*STATUS, str(sweep), "--resubmit", "layer=5"], tmp_path, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: cannot resubmit with 'layer=5'")
    assert read_manifest(sweep).resubmissions == []  # a refused resubmission changes nothing
    st = run([*STATUS, str(sweep), "--resubmit", "hydra.launcher.n_jobs=2"], tmp_path, timeout=120)
    assert st.returncode == 1 and "1 of 1 jobs of the sweep did not finish" in st.stderr  # layer 99 still fails
    manifest = read_manifest(sweep)
    assert manifest.launcher_params["n_jobs"] == 2
    assert [(r["jobs"], r["overrides"]) for r in manifest.resubmissions] == [([1], ["hydra.launcher.n_jobs=2"])]


def test_local_parallel_jobs(tmp_path):
    p = run([*ECHO, "-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2", "+sleep_s=1",
             "model_variant=instruct,rm_lora"], tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    pids = set()
    for variant in ("instruct", "rm_lora"):
        f = tmp_path / "demo" / "steering" / TRAIT / variant / "response__5" / "steering" / "echo_L10.json"
        pids.add(json.loads(f.read_text())["pid"])
    assert len(pids) == 2  # two worker processes
    st = run([*STATUS, str(the_sweep(tmp_path)), "--json"], tmp_path, timeout=60)
    assert st.returncode == 0 and [j["state"] for j in json.loads(st.stdout)["jobs"]] == ["done", "done"]


def test_bad_launcher_setting_is_one_line_error(tmp_path):
    p = run([*ECHO, "-m", "hydra/launcher=slurm", "+hydra.launcher.partion=gpu"], tmp_path, timeout=60)
    assert p.returncode == 2
    assert "unknown setting hydra.launcher.partion for the slurm launcher" in p.stderr
    st = run([*STATUS, str(tmp_path / "nope")], tmp_path, timeout=60)
    assert st.returncode == 2 and st.stderr.startswith("error: no sweep at")


@pytest.mark.parametrize("said,hint", [
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
     "is slurmctld running"),
    (("sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed: "
     "Invalid partition name specified"), "hydra.launcher.partition"),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     "hydra.launcher.account"),
    (("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's "
     "size and/or time limits)"), "submit fewer jobs"),
    ("sbatch: error: Invalid generic resource (gres) specification", "hydra.launcher.gpus_per_node"),
    ("sbatch: error: Batch job submission failed: Invalid feature specification", "hydra.launcher.constraint"),
    ("sbatch: unrecognized option '--bogus=1'", "additional_parameters"),
])
def test_sbatch_refusals_keep_sbatchs_words_and_name_the_setting(said, hint):
    from hydra_plugins.trait_pipeline_launchers.launchers import _sbatch_refusal

    msg = str(_sbatch_refusal(said))
    assert "\n" not in msg and msg.startswith("sbatch refused the sweep: " + said.splitlines()[0])
    assert hint in msg and msg.endswith("nothing was submitted")


def test_a_slurm_job_uses_the_gpus_slurm_gave_it(monkeypatch):
    from hydra_plugins.trait_pipeline_launchers.job import slurm_gpus

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_STEP_GPUS", raising=False)
    monkeypatch.delenv("SLURM_JOB_GPUS", raising=False)
    assert slurm_gpus() is None  # no GPU given, none made up
    monkeypatch.setenv("SLURM_JOB_GPUS", "2,3")  # a site whose setup left CUDA_VISIBLE_DEVICES unset
    assert slurm_gpus() == "2,3" and os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # SLURM's gres plugin set it: that wins
    assert slurm_gpus() == "0,1"


def test_failure_lines_keep_the_exception_type():
    from hydra_plugins.trait_pipeline_launchers.job import JobFailed, describe
    from trait_pipeline.errors import PipelineError

    assert describe(AssertionError("Torch not compiled with CUDA enabled")) == \
        "AssertionError: Torch not compiled with CUDA enabled"
    assert describe(KeyError("layer")) == "KeyError: 'layer'" and describe(RuntimeError()) == "RuntimeError"
    assert describe(PipelineError("unknown method 'x'")) == "unknown method 'x'"  # user errors: their line
    assert describe(JobFailed("exit status 2")) == "exit status 2"


# --- SLURM ------------------------------------------------------------------------------------
@needs_slurm
@pytest.mark.slurm
def test_slurm_failed_job_exits_nonzero_names_it_and_logs_traceback(tmp_path):
    p = run([*ECHO, "-m", *SLURM_TINY, "model_variant=instruct,rm_lora", "layer=10,99"], tmp_path, 300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "#1 model_variant=instruct layer=99: failed: ValueError: layer 99 is out of range" in p.stderr
    assert "#3 model_variant=rm_lora layer=99: failed: ValueError" in p.stderr
    sweep = the_sweep(tmp_path)
    manifest = read_manifest(sweep)
    ids = [j.scheduler_ids[-1] for j in manifest.jobs]
    assert len({i.split("_")[0] for i in ids}) == 1 and sorted(i.split("_")[1] for i in ids) == list("0123")
    states = {s.num: s for s in job_states(sweep)}
    assert states[1].state == "failed" and states[0].state == "done"
    assert "ValueError: layer 99" in Path(states[1].log).read_text()       # the job's own log
    err = sweep / ".submitit" / ids[1] / f"{ids[1]}_0_log.err"             # and SLURM's stderr
    assert "ValueError: layer 99" in err.read_text()
    assert not list((tmp_path / "demo" / "steering").rglob(".submitit"))


@needs_slurm
@pytest.mark.slurm
@pytest.mark.slow
def test_steer_sweep_on_slurm_then_local_gives_same_results(vectors_src, tmp_path):
    slurm_dir = experiments_with_vectors(vectors_src, tmp_path / "slurm")
    cmd = ["-m", "model_variant=instruct,rm_lora", "layer=10,20", *STEER_TINY]
    p = run([*STEER, *cmd, *SLURM_TINY], slurm_dir)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    sweep = the_sweep(slurm_dir)
    ids = [j.scheduler_ids[-1] for j in read_manifest(sweep).jobs]
    assert len(ids) == 4 and len({i.split("_")[0] for i in ids}) == 1  # one array of 4
    assert [s.state for s in job_states(sweep)] == ["done"] * 4
    for variant in ("instruct", "rm_lora"):
        res = results(slurm_dir, variant)
        runs = runs_by_layer(res)
        assert sorted(runs) == [10, 20]
        assert all(r["vector_provenance"][0]["model_variant"] == "base" for r in runs.values())
        assert res["runs"][0]["composed_config"]  # links to the job's config snapshot
    assert not list((slurm_dir / "demo" / "steering").rglob("multirun.yaml"))

    local_dir = experiments_with_vectors(vectors_src, tmp_path / "local")
    p = run([*STEER, *cmd, "hydra/launcher=local"], local_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    for variant in ("instruct", "rm_lora"):
        assert comparable(results(local_dir, variant)) == comparable(results(slurm_dir, variant))
        rel = Path("demo", "steering", TRAIT, variant)
        assert result_files(local_dir / rel) == result_files(slurm_dir / rel)


@needs_slurm
@pytest.mark.slurm
@pytest.mark.slow
def test_cancelled_sweep_resubmitted_does_not_redo_finished_runs(vectors_src, tmp_path):
    exp = experiments_with_vectors(vectors_src, tmp_path / "exp")
    cmd = ["-m", "model_variant=instruct,rm_lora", "layer=10,20", *STEER_TINY, *SLURM_TINY,
           "hydra.launcher.wait=false", "hydra.launcher.array_parallelism=1"]
    p = run([*STEER, *cmd], exp, timeout=120)
    assert p.returncode == 0 and "trait-pipeline status" in p.stdout, p.stdout + p.stderr
    sweep = the_sweep(exp)
    array = read_manifest(sweep).jobs[0].scheduler_ids[0].split("_")[0]
    deadline = time.time() + 400
    while time.time() < deadline:  # one job at a time: wait for the first to finish
        if job_states(sweep)[0].state == "done":
            break
        time.sleep(0.5)
    else:
        pytest.fail("first job did not finish: " + str(job_states(sweep)))
    subprocess.run(["scancel", array], check=True)
    while any(s.state in ("pending", "running") for s in job_states(sweep)):
        time.sleep(0.5)
    states = job_states(sweep)
    assert states[0].state == "done" and {s.state for s in states[1:]} == {"cancelled"}, states
    st = run([*STATUS, str(sweep)], exp, timeout=60)
    assert st.returncode == 1 and "cancelled" in st.stdout
    first = runs_by_layer(results(exp, "instruct"))[10]

    st = run([*STATUS, str(sweep), "--resubmit", "--wait"], exp)
    assert st.returncode == 0, st.stdout[-2000:] + st.stderr[-2000:]
    assert "resubmitted 3 jobs" in st.stdout and "4 jobs: 4 done" in st.stdout
    assert len(read_manifest(sweep).jobs[1].scheduler_ids) == 2
    again = runs_by_layer(results(exp, "instruct"))  # asserts no layer was run twice
    assert again[10]["timestamp"] == first["timestamp"] and again[10]["key"] == first["key"]
    assert sorted(again) == [10, 20] and sorted(runs_by_layer(results(exp, "rm_lora"))) == [10, 20]


def test_site_file_merges_over_the_slurm_profile(tmp_path):
    """conf/hydra/launcher/site/slurm.yaml (git-ignored) sets a user's cluster; found on the search path."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from trait_pipeline import resolvers
    from trait_pipeline.layout import CONF_DIR

    site = tmp_path / "hydra" / "launcher" / "site"
    site.mkdir(parents=True)
    (site / "slurm.yaml").write_text("partition: gpu\naccount: my-lab\ngpus_per_node: 1\n"
                                    "setup: ['module load cuda']\n")
    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = compose("steer", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        mine = compose("steer", overrides=["hydra/launcher=slurm", f"hydra.searchpath=[file://{tmp_path}]"],
                       return_hydra_config=True)
        default = compose("steer", return_hydra_config=True)
    GlobalHydra.instance().clear()
    # the profile asks for nothing a cluster may lack: null means the cluster's default
    assert plain.hydra.launcher.partition is None and plain.hydra.launcher.cpus_per_task is None
    assert plain.hydra.launcher.mem_gb is None and plain.hydra.launcher.gpus_per_node is None
    assert (mine.hydra.launcher.partition, mine.hydra.launcher.account) == ("gpu", "my-lab")
    assert list(mine.hydra.launcher.setup) == ["module load cuda"] and mine.hydra.launcher.gpus_per_node == 1
    assert default.hydra.launcher._target_.endswith("LocalLauncher")  # -m runs locally by default
