"""The hardening audit, kept in the suite: what an adversarial user tried, as tests.

* a bad-input table: each case exits 2 with one ``error:`` line, no traceback, and leaves the
  experiments tree as it was (no file created, changed or removed; no folder left behind);
* kill -9 at several points of extract and steer: reruns finish, nothing is corrupt;
* secrets: ``HF_TOKEN`` and ``OPENAI_API_KEY`` set to markers through a sweep whose judge
  echoes the key in its errors; no marker in anything written (pickles included) or printed;
* a judge outage (a real failing HTTP server on 127.0.0.1) is never stored as a result;
* every file and folder written follows the umask.

Subprocesses run two at a time (the CI machine has 2 cores); the table's counts are printed
(``pytest -s``) and written to ``bad_input_counts.json`` in the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from judge_server import JudgeServer

REPO = Path(__file__).resolve().parent.parent
VEC = "demo/extraction/demo/optimism/base/vectors/response__5/residual"
ACTS = "demo/extraction/demo/optimism/base/activations/response__5/residual"
RESULTS = "demo/steering/demo/optimism/instruct/response__5/steering/results.json"
HF_MARK = "hf_AUDITMARKERhf7q2w9e"
OA_MARK = "sk-AUDITMARKERoa4r8t1y"


def cli(module: str, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file (size, mtime, mode) and folder (mode) under ``root``, symlinks as links."""
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            out[rel] = ("dir", stat.S_IMODE(st.st_mode)) if stat.S_ISDIR(st.st_mode) else (
                "file", st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


def diff(before: dict, after: dict) -> list[str]:
    changes = [f"created {k}" for k in sorted(set(after) - set(before))]
    changes += [f"removed {k}" for k in sorted(set(before) - set(after))]
    changes += [f"changed {k}" for k in sorted(set(before) & set(after)) if before[k] != after[k]]
    return changes


# --- 1. the bad-input table ----------------------------------------------------------------------
@dataclass
class Case:
    name: str
    module: str
    args: list[str]
    expect: str = ""                                  # a part of the error line
    setup: Callable[[Path], None] | None = None       # prepares the experiments tree
    experiments: Callable[[Path], Path] | None = None  # another experiments folder
    env: dict = field(default_factory=dict)


def _truncate(rel: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        p = root / rel
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return setup


def _malformed(rel: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text('{"runs": [ {"key": "abc", ')
    return setup


def _under_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile" / "exp"


S = "trait_pipeline.steer"
E = "trait_pipeline.extract"
I = "trait_pipeline.infer"
STEER_OK = ["layer=10", "coef=[2]", "questions=2"]
EXTRACT_OK = ["max_pairs=6", "layers=[10]", "method=[mean_diff]"]
CASES = [
    Case("coef nan", S, ["layer=10", "coef=nan"], "coef"),
    Case("coef inf", S, ["layer=10", "coef=inf"], "finite"),
    Case("coef -inf in a list", S, ["layer=10", "coef=[2,-inf]"], "finite"),
    Case("global_scale nan", S, [*STEER_OK, "global_scale=nan"], "finite"),
    Case("layer not an int", S, ["layer=abc", "coef=[2]"], "layer"),
    Case("layer empty", S, ["layer=[]", "coef=[2]"], "layer"),
    Case("layer out of range", S, ["layer=99", "coef=[2]"], "layer"),
    Case("questions negative", S, [*STEER_OK[:2], "questions=-1"], "questions"),
    Case("max_new_tokens 0", S, [*STEER_OK, "generation.max_new_tokens=0"], "max_new_tokens"),
    Case("trait without category", S, [*STEER_OK, "trait=optimism"], "bad trait"),
    Case("trait unknown", S, [*STEER_OK, "trait=demo/nope"], "unknown trait"),
    Case("trait with newline", S, [*STEER_OK, "trait=demo/optimism\n"], "trait"),
    Case("trait over-long", S, [*STEER_OK, "trait=demo/" + "x" * 300], "trait"),
    Case("trait traversal", S, [*STEER_OK, "trait=../../etc"], "trait"),
    Case("model_variant unknown", S, [*STEER_OK, "model_variant=nope"], "model_variant"),
    Case("vectors.model_variant unknown", S, [*STEER_OK, "vectors.model_variant=nope"], "nope"),
    Case("experiment unknown", S, [*STEER_OK, "experiment=nope"], "experiment"),
    Case("position bad", S, [*STEER_OK, "position=resp[:5]"], "position"),
    Case("component unknown", S, [*STEER_OK, "component=nope"], "component"),
    Case("method unknown", S, [*STEER_OK, "method=nope"], "method"),
    Case("judge unknown", S, [*STEER_OK, "judge=nope"], "judge"),
    Case("judge none", S, [*STEER_OK, "judge=none"], "judge"),
    Case("steer_positions bad", S, [*STEER_OK, "steer_positions=prompt"], "steer_positions"),
    Case("multi_layer bad", S, [*STEER_OK, "multi_layer=bogus"], "multi_layer"),
    Case("prompt_set unknown", S, [*STEER_OK, "prompt_set=nope"], "nope"),
    Case("prompt_set with separator", S, [*STEER_OK, "prompt_set=a/b"], "prompt set"),
    Case("prompt_set over-long", S, [*STEER_OK, "prompt_set=" + "p" * 300], "prompt set"),
    Case("device not a device", S, [*STEER_OK, "device=gpu0"], "device"),
    Case("device cuda without CUDA", S, [*STEER_OK, "device=cuda"], "CUDA"),
    Case("missing vector layer", S, ["layer=10", "coef=[2]", "method=gradient", "questions=2"],
         "no vector", setup=lambda r: shutil.rmtree(r / VEC / "gradient")),
    Case("truncated vector", S, STEER_OK, "truncated", setup=_truncate(f"{VEC}/probe/layer10.safetensors")),
    Case("malformed results.json", S, STEER_OK, "malformed JSON", setup=_malformed(RESULTS)),
    Case("experiments under a file", S, STEER_OK, "not a folder", experiments=lambda tmp: _under_file(tmp)),
    Case("extract trait unknown", E, ["trait=demo/nope"], "unknown trait"),
    Case("extract method unknown", E, ["method=[nope]"], "method"),
    Case("extract val_split out of range", E, ["val_split=1.5"], "val_split"),
    Case("extract val_split nan", E, ["val_split=nan"], "finite"),
    Case("extract layers not ints", E, ["layers=abc"], "layer"),
    Case("extract layer out of range", E, ["layers=[99]"], "out of range"),
    Case("extract rollouts 0", E, ["generation.rollouts=0"], "rollouts"),
    Case("extract step unknown", E, ["steps=[nope]"], "nope"),
    Case("extract force unknown", E, ["force=[nope]"], "nope"),
    Case("extract temperature inf", E, ["generation.temperature=inf"], "finite"),
    Case("extract device cuda", E, [*EXTRACT_OK, "device=cuda", "force=true"], "CUDA"),
    Case("extract malformed _evaluation", E, ["steps=[evaluate]", "force=[evaluate]"], "malformed JSON",
         setup=_malformed("demo/extraction/_evaluation/base.json")),
    Case("extract truncated activations", E, ["steps=[vectors]", "force=[vectors]"], "truncated",
         setup=_truncate(f"{ACTS}/train.safetensors")),
    Case("extract new trait folder never made", E, ["trait=behavior/sycophancy", "model_variant=nope"],
         "model_variant"),
    Case("infer prompt_set unknown", I, ["prompt_set=nope"], "prompt set"),
    Case("infer trait unknown", I, ["trait=demo/nope"], "unknown trait"),
    Case("sweep_status on a non-sweep folder", "trait_pipeline.sweep_status", ["{tmp}"], "sweep"),
]


def _ro_cases() -> list[Case]:
    """Read-only and full experiment folders need a tmpfs mount (root in a container)."""
    return [
        Case("read-only tree, steer", S, STEER_OK, "not writable", experiments=lambda tmp: _mount(tmp, "ro")),
        Case("read-only tree, no-op extract rerun", E, [], "not writable",
             experiments=lambda tmp: _mount(tmp, "ro")),
        Case("full file system", S, STEER_OK, "free", experiments=lambda tmp: _mount(tmp, "full")),
    ]


_MOUNTS: list[Path] = []


def _mount(tmp: Path, kind: str) -> Path:
    target = tmp / f"mnt_{kind}"
    target.mkdir()
    size = "64m" if kind == "ro" else "2m"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root in a container)")
    _MOUNTS.append(target)
    if kind == "ro":
        shutil.copytree(tmp.parent / "lane_src", target / "exp")
        subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
    return target / "exp"


def _run_case(case: Case, root: Path, tmp: Path) -> dict:
    if case.setup:
        case.setup(root)
    experiments = case.experiments(tmp) if case.experiments else root
    before = snapshot(experiments)
    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    if case.module != "trait_pipeline.sweep_status":
        args.append(f"paths.experiments={experiments}")
    proc = cli(case.module, *args, env=case.env)
    after = snapshot(experiments)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return {
        "case": case.name, "rc": proc.returncode, "lines": lines,
        "traceback": "Traceback" in proc.stderr or "Traceback" in proc.stdout,
        "one_line": len(lines) == 1 and lines[0].startswith("error: "),
        "expected": case.expect.lower() in proc.stderr.lower(),
        "changes": diff(before, after),
    }


@pytest.mark.timeout(1800)  # ~1 min on 2 free cores; generous for a loaded machine
def test_bad_input_table(extracted, tmp_path):
    lanes = [tmp_path / "lane0", tmp_path / "lane1"]
    for lane in lanes:
        shutil.copytree(extracted, lane / "exp")
    src = tmp_path / "lane_src"
    shutil.copytree(extracted, src)
    cases = CASES + _ro_cases()

    def lane_worker(i: int) -> list[dict]:
        out = []
        lane = lanes[i]
        for case in cases[i::2]:
            root = lane / "exp"
            if case.setup:  # a fresh copy: a setup must not leak into the next case
                shutil.rmtree(root)
                shutil.copytree(extracted, root)
            try:
                out.append(_run_case(case, root, lane))
            except pytest.skip.Exception:
                continue
            except Exception as exc:  # noqa: BLE001  a broken case is reported with the others
                out.append({"case": case.name, "rc": None, "lines": [repr(exc)], "traceback": True,
                            "one_line": False, "expected": False, "changes": []})
        return out

    try:
        with ThreadPoolExecutor(2) as pool:
            results = [r for lane in pool.map(lane_worker, range(2)) for r in lane]
    finally:
        for m in _MOUNTS:
            subprocess.run(["umount", str(m)], capture_output=True, check=False)
    counts = {
        "tried": len(results),
        "exit_2": sum(r["rc"] == 2 for r in results),
        "one_line": sum(r["one_line"] for r in results),
        "traceback": sum(r["traceback"] for r in results),
        "silent": sum(r["rc"] == 0 for r in results),
        "changed_tree": sum(bool(r["changes"]) for r in results),
    }
    (tmp_path / "bad_input_counts.json").write_text(json.dumps({"counts": counts, "results": results}, indent=1))
    print(f"\nbad-input table: {counts}")
    bad = [r for r in results if r["rc"] != 2 or not r["one_line"] or r["traceback"]
           or not r["expected"] or r["changes"]]
    assert not bad, json.dumps(bad, indent=1)[:6000]


# --- 2. kill -9 at several points --------------------------------------------------------------
def _kill_when(args: list[str], module: str, ready: Callable[[], bool], timeout: float = 600) -> int:
    """Start a stage; SIGKILL it as soon as ``ready()``; its exit status (-9 when killed)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    return proc.returncode


def _no_temp_files_and_all_loads(root: Path) -> None:
    from trait_pipeline.vector_store import check_loads

    # a process killed between writing its temp file and the rename cannot remove it; such
    # files are hidden (".name.xxxx.tmp") and no stage, discovery or dashboard reads them.
    # Sweeping stale ones on the next write is a known gap (see docs/hardening.md).
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]
    assert all(p.name.startswith(".") for p in leftovers), leftovers
    for p in [*root.rglob("*.json"), *root.rglob("*.safetensors")]:
        if not p.name.startswith("."):
            assert check_loads(p) is None, check_loads(p)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_9_during_extract_and_steer_then_rerun(extracted, tmp_path):
    from trait_pipeline.extract import _vectors_match

    # extract: a fresh trait folder, killed after generate, after activations, after a vector
    exp = tmp_path / "exp"
    args = [f"paths.experiments={exp}", "max_pairs=8", "layers=[8,10]", "method=[mean_diff,probe]",
            "generation.max_new_tokens=8"]
    base = exp / "demo/extraction/demo/optimism/base"
    points = [lambda: (base / "responses" / "neg.json").is_file(),
              lambda: (base / "activations/response__5/residual/train.safetensors").is_file(),
              lambda: (base / "vectors/response__5/residual/mean_diff/layer8.safetensors").is_file()]
    killed = [_kill_when(args, "trait_pipeline.extract", p) for p in points]
    assert killed.count(-9) >= 2, killed  # at least two kills landed mid-run
    done = cli("trait_pipeline.extract", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    _no_temp_files_and_all_loads(exp)
    for method in ("mean_diff", "probe"):
        d = base / "vectors/response__5/residual" / method
        assert _vectors_match(d, [8, 10], json.loads((d / "metadata.json").read_text()))

    # steer: killed once the baseline is stored, then once run responses are being written
    res = extracted / RESULTS
    sargs = [f"paths.experiments={extracted}", "layer=[10,12]", "coef=[1,4]", "questions=3"]
    k1 = _kill_when(sargs, S, res.is_file)
    k2 = _kill_when(sargs, S, lambda: any((res.parent / "responses" / "residual").rglob("L*.json"))
                    if (res.parent / "responses" / "residual").is_dir() else False)
    assert -9 in (k1, k2), (k1, k2)
    done = cli(S, *sargs)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(res.read_text())
    keys = [r["key"] for r in data["runs"]]
    assert len(keys) == 4 == len(set(keys)) and len(data["baselines"]) == 1
    before = snapshot(extracted / "demo/steering")
    again = cli(S, *sargs)
    assert again.returncode == 0 and "already in" in again.stderr + again.stdout
    assert json.loads(res.read_text())["runs"] == data["runs"]
    assert not [c for c in diff(before, snapshot(extracted / "demo/steering"))
                if "results.json" in c and "lock" not in c]
    _no_temp_files_and_all_loads(extracted)


# --- 3./4. a judge server on 127.0.0.1: outages and secrets ---------------------------------------
@pytest.fixture
def judge_server():
    s = JudgeServer()
    yield s
    s.close()


def _judge_args(server: JudgeServer, cache: Path) -> list[str]:
    return server.judge_overrides(cache, model="audit-judge")


def test_judge_outage_is_never_a_result(extracted, judge_server, tmp_path):
    env = {"OPENAI_API_KEY": OA_MARK}
    common = [f"paths.experiments={extracted}", "layer=10", "questions=2",
              *_judge_args(judge_server, tmp_path / "cache"), "judge.cache=false"]
    res = extracted / RESULTS

    # the judge is down: the baseline is not judged, nothing is stored, exit 2 naming the error
    judge_server.mode = "fail"
    p = cli(S, *common, "coef=[2]", env=env)
    assert p.returncode == 2, p.stderr[-2000:]
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "baseline was not judged" in err[0] and "HTTP 500" in err[0], p.stderr
    assert OA_MARK not in p.stderr + p.stdout
    assert not res.exists() or json.loads(res.read_text())["baseline"] is None

    # the judge is back: baseline + one run
    judge_server.mode = "ok"
    p = cli(S, *common, "coef=[2]", env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    data = json.loads(res.read_text())
    assert len(data["runs"]) == 1 and data["baseline"]["n"] == 2

    # down again for two new configs: neither is stored, exit 2 naming the judge error
    judge_server.mode = "fail"
    p = cli(S, *common, "coef=[4,8]", env=env)
    assert p.returncode == 2 and "2 of 2 steering configs were not judged" in p.stderr, p.stderr[-2000:]
    assert "HTTP 500" in p.stderr and OA_MARK not in p.stderr
    assert json.loads(res.read_text())["runs"] == data["runs"]

    # the judge is back: the rerun retries exactly the configs that were not judged
    judge_server.mode = "ok"
    p = cli(S, *common, "coef=[2,4,8]", env=env)
    assert p.returncode == 0 and "1 config already in results.json" in p.stderr + p.stdout, p.stderr[-2000:]
    runs = json.loads(res.read_text())["runs"]
    assert sorted(r["config"]["vectors"][0]["weight"] for r in runs) == [2.0, 4.0, 8.0]
    assert all(r["result"]["n"] == 2 for r in runs)


def test_summary_uses_only_the_matching_baseline():
    from trait_pipeline.steering_summary import format_summary, read_results

    def run(key, coef, mean):
        return {"key": f"r{coef}", "baseline_key": key, "result": {"trait_mean": mean, "coherence_mean": 90, "n": 2},
                "config": {"vectors": [{"layer": 10, "weight": coef, "method": "probe", "component": "residual"}]}}

    data = {"trait": "demo/optimism", "model_variant": "instruct",
            "baseline": {"key": "old", "trait_mean": 10.0, "coherence_mean": 90.0},
            "baselines": {"old": {"key": "old", "trait_mean": 10.0, "coherence_mean": 90.0},
                          "new": {"key": "new", "trait_mean": 60.0, "coherence_mean": 80.0}},
            "runs": [run("old", 2, 30.0), run("new", 4, 70.0), run("gone", 8, 99.0)]}
    res = read_results(data, baseline_key="new")
    assert res.baseline_trait_mean == 60.0 and [r.coef for r in res.rows] == [4.0]
    assert "baseline trait 60.0" in format_summary(res)
    # a run whose baseline is not stored has no delta, never one from another baseline
    rows = {r.coef: r for r in read_results(data).rows}
    assert rows[8.0].delta is None and rows[2.0].delta == 20.0 and rows[4.0].delta == 10.0


def _grep_markers(paths: list[Path], texts: list[str]) -> list[str]:
    hits = []
    for root in paths:
        for p in [root] if root.is_file() else root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                data = p.read_bytes()
                hits += [f"{p}: {m}" for m in (HF_MARK, OA_MARK) if m.encode() in data]
    hits += [f"output: {m}" for t in texts for m in (HF_MARK, OA_MARK) if m in t]
    return hits


def test_secrets_never_reach_disk_or_output(extracted, judge_server, tmp_path):
    env = {"HF_TOKEN": HF_MARK, "OPENAI_API_KEY": OA_MARK}
    cache = tmp_path / "cache"
    sweep = ["-m", f"paths.experiments={extracted}", "layer=10,12", "coef=[2]", "questions=2",
             "hydra.launcher.n_jobs=2", *_judge_args(judge_server, cache)]
    # the server echoes the key in every error: the sweep fails, and says why without the key
    judge_server.mode = "fail"
    failed = cli(S, *sweep, env=env)
    assert failed.returncode == 1 and "HTTP 500" in failed.stderr, failed.stderr[-3000:]
    judge_server.mode = "ok"
    ok = cli(S, *sweep, env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    # the key reached the jobs at run time (worker processes, from their environment)
    assert f"Bearer {OA_MARK}" in judge_server.auth
    pickles = list(extracted.rglob("*.pkl"))
    assert pickles, "the sweep wrote no launch.pkl to check"
    written = [extracted, cache]
    hits = _grep_markers(written, [failed.stdout, failed.stderr, ok.stdout, ok.stderr])
    assert not hits, hits[:20]


# --- 5. file modes ------------------------------------------------------------------------------
def test_everything_written_follows_the_umask(extracted, tmp_path):
    """The session's extraction and a steering run (subprocesses, umask 022 and 027)."""
    def check(root: Path, umask: int) -> list[str]:
        bad = []
        for p in [root, *root.rglob("*")]:
            if p.is_symlink():
                continue
            mode = stat.S_IMODE(p.stat().st_mode)
            want = (0o777 if p.is_dir() else 0o666) & ~umask
            if p.is_file() and mode & 0o111:  # nothing we write is executable
                want |= mode & 0o111
            if mode != want:
                bad.append(f"{p.relative_to(root)}: {oct(mode)} != {oct(want)}")
        return bad

    assert not check(extracted / "demo" / "extraction", 0o022)[:10]
    for umask in (0o022, 0o027):
        exp = tmp_path / f"exp{umask:o}"
        shutil.copytree(extracted, exp)
        shutil.rmtree(exp / "demo" / "steering", ignore_errors=True)
        proc = subprocess.run(
            [sys.executable, "-c", (f"import os, runpy, sys; os.umask({umask}); sys.argv = ['steer', "
                                    "*sys.argv[1:]]; runpy.run_module('trait_pipeline.steer', run_name='__main__')"),
             f"paths.experiments={exp}", "layer=10", "coef=[2]", "questions=2", f"paths.cache={tmp_path / 'c'}"],
            cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"}, capture_output=True, text=True,
            timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        bad = check(exp / "demo" / "steering", umask)
        assert not bad, bad[:10]

