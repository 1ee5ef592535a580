"""results.json under concurrent writers: lock, temp file, rename; resume by run key."""

import json
import multiprocessing as mp

import pytest

from trait_pipeline.errors import PipelineError
from trait_pipeline.results_store import ResultsStore, run_key

HEADER = {"trait": "demo/optimism", "model_variant": "rm_lora"}


def _add(path, layer, barrier):
    store = ResultsStore(path)
    barrier.wait()  # all 8 start writing at the same moment
    for coef in (1.0, 2.0, 4.0):  # several read-merge-writes each, to interleave
        cfg = {"vectors": [{"layer": layer, "weight": coef}]}
        store.add_run({"key": run_key(cfg), "config": cfg, "result": {"trait_mean": layer + coef}},
                      header=HEADER)


def test_eight_processes_add_runs_concurrently(tmp_path):
    path = tmp_path / "results.json"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_add, args=(path, layer, barrier)) for layer in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    data = json.loads(path.read_text())  # valid JSON
    layers = sorted({r["config"]["vectors"][0]["layer"] for r in data["runs"]})
    assert layers == list(range(8)) and len(data["runs"]) == 24
    assert data["schema_version"] == 1 and data["trait"] == "demo/optimism"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left


def test_present_runs_are_skipped_and_header_is_kept(tmp_path):
    store = ResultsStore(tmp_path / "results.json")
    key = run_key({"vectors": [{"layer": 10, "weight": 4}]})
    assert key == run_key({"vectors": [{"weight": 4.0, "layer": 10}]})  # 4 == 4.0, order-free
    assert store.add_runs([{"key": key, "v": 1}, {"key": key, "v": 2}], HEADER) == [True, False]
    assert store.add_run({"key": key, "v": 3}, {"trait": "other"}) is False
    data = store.read()
    assert [r["v"] for r in data["runs"]] == [1] and data["trait"] == "demo/optimism"
    assert store.run_keys() == {key} and store.find_run(key)["v"] == 1


def test_baselines_are_kept_per_settings(tmp_path):
    store = ResultsStore(tmp_path / "results.json")
    a = store.set_baseline_if_absent("k24", {"trait_mean": 40.0}, HEADER)
    again = store.set_baseline_if_absent("k24", {"trait_mean": 99.0}, HEADER)
    b = store.set_baseline_if_absent("k64", {"trait_mean": 45.0}, HEADER)
    assert a == again and a["trait_mean"] == 40.0 and b["trait_mean"] == 45.0
    data = store.read()
    assert data["baseline"]["key"] == "k24" and set(data["baselines"]) == {"k24", "k64"}
    assert store.baseline("k64")["trait_mean"] == 45.0


def test_a_failing_update_writes_nothing(tmp_path):
    store = ResultsStore(tmp_path / "results.json")
    store.add_run({"key": "a"}, HEADER)
    before = (tmp_path / "results.json").read_text()

    def boom(data):
        data["runs"].clear()
        raise RuntimeError("crash mid-update")

    with pytest.raises(RuntimeError):
        store.update(boom, HEADER)
    assert (tmp_path / "results.json").read_text() == before


def test_unreadable_files_are_clear_errors(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[1, 2]")
    with pytest.raises(PipelineError, match="not a steering results file"):
        ResultsStore(path).read()
    path.write_text(json.dumps({"schema_version": 99, "runs": []}))
    with pytest.raises(PipelineError, match="schema_version 99"):
        ResultsStore(path).read()
    with pytest.raises(ValueError, match="key"):
        ResultsStore(tmp_path / "x.json").add_runs([{"no": "key"}], HEADER)


def test_a_held_lock_times_out_with_a_message(tmp_path):
    from filelock import FileLock

    store = ResultsStore(tmp_path / "results.json", lock_timeout=0.2)
    with FileLock(str(store.lock_path)):
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=_try_add, args=(store.path, q))
        p.start()
        p.join(60)
    assert "locked by another job" in q.get(timeout=5)


def _try_add(path, q):
    try:
        ResultsStore(path, lock_timeout=0.2).add_run({"key": "x"}, HEADER)
        q.put("added")
    except PipelineError as exc:
        q.put(str(exc))
