"""The dashboard's JSON API: discovery matches the files on disk, data matches the files,
errors are real status codes, and traversal attempts are refused without reading."""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path

import pytest
from dashboard_fixture import EXPERIMENT, POSITION, PROMPT_SET, TRAIT, make_fixture_experiment
from fastapi.testclient import TestClient

from trait_pipeline.serve import create_app, main, running


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("dash")
    root = base / "experiments"
    make_fixture_experiment(root)
    (base / "secret.json").write_text('{"secret": "do-not-serve"}')
    (root / "not_an_experiment").mkdir()  # no stage folders: not listed
    return root


@pytest.fixture(scope="module")
def client(tree):
    return TestClient(create_app(tree))


def ok(client, url, **params):
    r = client.get(url, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def read(path: Path):
    return json.loads(path.read_text())


def test_discovery_matches_the_files_on_disk(client, tree):
    assert ok(client, "/api/experiments") == {"experiments": [EXPERIMENT]}
    ov = ok(client, f"/api/experiments/{EXPERIMENT}")
    exp = tree / EXPERIMENT
    on_disk_ext = {p.parent.name for p in exp.glob("extraction/*/*/*/vectors")}
    on_disk_ext |= {p.stem for p in exp.glob("extraction/_evaluation/*.json")}
    assert set(ov["extraction"]["variants"]) == on_disk_ext == {"base", "instruct"}
    assert ov["extraction"]["traits"] == [TRAIT]
    steer = {p.relative_to(exp / "steering").parts[2] for p in exp.glob("steering/*/*/*/*/*/results.json")}
    assert set(ov["steering"]["variants"]) == steer == {"instruct", "rm_lora"}
    assert set(ov["inference"]["variants"]) == {p.name for p in (exp / "inference").iterdir()}
    idx = ok(client, f"/api/experiments/{EXPERIMENT}/inference/rm_lora")
    ids = sorted(p.stem for p in exp.glob(f"inference/rm_lora/projections/{TRAIT}/{PROMPT_SET}/*.json"))
    assert idx["prompt_sets"][PROMPT_SET]["ids"] == ids == ["1", "2"]
    assert idx["replay_sources"] == ["instruct"] and idx["other_variants"] == ["instruct"]
    files = ok(client, f"/api/experiments/{EXPERIMENT}/steering/instruct", trait=TRAIT)["results"]
    assert files == [{"position": POSITION, "position_dir": "response__5", "prompt_set": PROMPT_SET}]


def test_extraction_grid_is_the_evaluation_file(client, tree):
    for variant in ("base", "instruct"):
        data = ok(client, f"/api/experiments/{EXPERIMENT}/extraction/{variant}")
        rows = read(tree / EXPERIMENT / "extraction" / "_evaluation" / f"{variant}.json")["results"]
        (grid,) = data["heatmaps"][TRAIT]
        for r in rows:
            i, j = grid["methods"].index(r["method"]), grid["layers"].index(r["layer"])
            assert grid["metrics"]["val_accuracy"][i][j] == r["val_accuracy"]
            assert grid["metrics"]["val_effect_size"][i][j] == r["val_effect_size"]
            assert grid["intervals"]["val_accuracy"][i][j] == r.get("val_accuracy_ci")
        assert data["best"][TRAIT]["layer"] == 5 and data["vector_counts"][TRAIT] == 12
        (lens,) = data["logit_lens"][TRAIT]
        assert (lens["position"], lens["component"]) == (POSITION, "residual")
        assert lens["methods"]["probe"]["mid"]["toward"][0]["token"] == f"{variant}_good"
        assert lens["methods"] == read(tree / lens["file"])["methods"]


def test_steering_grid_and_best_per_layer_follow_results_json(client, tree):
    url = f"/api/experiments/{EXPERIMENT}/steering/rm_lora/results"
    params = {"trait": TRAIT, "position": "response[:5]", "prompt_set": PROMPT_SET}
    data = ok(client, url, **params)
    raw = read(tree / data["results_file"])
    (g,) = data["groups"]
    base = raw["baseline"]["trait_mean"]
    assert data["baseline"]["trait_mean"] == base
    for run in raw["runs"]:
        v = run["config"]["vectors"][0]
        i, j = g["layers"].index(v["layer"]), g["coefs"].index(v["weight"])
        assert g["delta"][i][j] == pytest.approx(run["result"]["trait_mean"] - base)
        assert g["coherence"][i][j] == run["result"]["coherence_mean"]
        assert g["runs"][i][j] == run["key"]
    for min_coh in (75, 0):
        best = ok(client, url, min_coherence=min_coh, **params)["groups"][0]["best_per_layer"]
        for b in best:
            ok_runs = [r for r in raw["runs"] if r["config"]["vectors"][0]["layer"] == b["layer"]
                       and r["result"]["coherence_mean"] >= min_coh]
            top = max(ok_runs, key=lambda r: r["result"]["trait_mean"])
            assert b["best"]["run"] == top["key"]
    # the directory name of the position works as well as the position
    assert ok(client, url, **{**params, "position": "response__5"})["groups"] == data["groups"]


def test_response_browser_reads_the_runs_file(client, tree):
    url = f"/api/experiments/{EXPERIMENT}/steering/instruct/responses"
    params = {"trait": TRAIT, "position": POSITION, "prompt_set": PROMPT_SET}
    run = ok(client, url, run="L2_c4_probe", **params)
    assert [x["response"] for x in run["responses"]] == [x["response"] for x in read(tree / run["file"])]
    assert run["responses"][0]["response"] == "instruct L2 c4 answer 0"
    base = ok(client, url, run="baseline", **params)
    assert base["file"].endswith("responses/baseline.json") and len(base["responses"]) == 3
    assert client.get(url, params={**params, "run": "nope"}).status_code == 404


def test_projection_and_variant_compare(client, tree):
    url = f"/api/experiments/{EXPERIMENT}/inference/instruct/projection"
    data = ok(client, url, trait=TRAIT, prompt_set=PROMPT_SET, id="2", compare="rm_lora")
    own = read(tree / data["main"]["projection_file"])
    assert data["main"]["series"][0]["prompt"] == own["projections"]["prompt"]
    assert data["main"]["series"][0]["response"] == own["projections"]["response"]
    assert data["main"]["tokens"]["response"] == [f" r{i}" for i in range(6)]
    # rm_lora's replay of instruct's responses is preferred: same tokens, comparable per token
    assert data["other"]["replayed_from"] == "instruct" and data["same_tokens"] is True
    assert "/replay/instruct/" in data["other"]["projection_file"]
    back = ok(client, f"/api/experiments/{EXPERIMENT}/inference/rm_lora/projection",
              trait=TRAIT, prompt_set=PROMPT_SET, id="2", compare="instruct")
    assert back["other"]["replayed_from"] is None and back["same_tokens"] is False


@pytest.mark.parametrize("url, params, status", [
    ("/api/experiments/nope", {}, 404),
    (f"/api/experiments/{EXPERIMENT}/extraction/rm_lora", {}, 404),
    (f"/api/experiments/{EXPERIMENT}/inference/base", {}, 404),
    (f"/api/experiments/{EXPERIMENT}/steering/instruct/results",
     {"trait": TRAIT, "position": "middle", "prompt_set": PROMPT_SET}, 400),
    (f"/api/experiments/{EXPERIMENT}/steering/instruct/results",
     {"trait": TRAIT, "position": POSITION, "prompt_set": PROMPT_SET, "min_coherence": 150}, 422),
    (f"/api/experiments/{EXPERIMENT}/steering/instruct/results", {"trait": TRAIT}, 422),
    (f"/api/experiments/{EXPERIMENT}/inference/instruct/projection",
     {"trait": TRAIT, "prompt_set": PROMPT_SET, "id": "99"}, 404),
])
def test_errors_are_http_status_codes(client, url, params, status):
    r = client.get(url, params=params)
    assert r.status_code == status, r.text
    assert "\n" not in r.json()["detail"] if isinstance(r.json()["detail"], str) else True


TRAVERSALS = [
    "/api/experiments/../secret.json",
    "/api/experiments/..%2fsecret.json",
    "/api/experiments/%2e%2e/extraction/base",
    "/api/experiments/%2E%2E%2F%2E%2E%2Fetc/extraction/base",
    "/api/experiments/dash/extraction/..%2F..%2F..%2Fsecret",
    "/static/../../secret.json",
    "/static/..%2f..%2fserve.py",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/..%5c..%5cserve.py",
    "/api/experiments/%2Fetc%2Fpasswd",
    "//etc/passwd",
]
TRAVERSAL_QUERIES = [
    ("inference/instruct/projection", {"trait": "../../secret", "prompt_set": PROMPT_SET, "id": "1"}),
    ("inference/instruct/projection", {"trait": "/etc/passwd", "prompt_set": PROMPT_SET, "id": "1"}),
    ("inference/instruct/projection", {"trait": TRAIT, "prompt_set": "..", "id": "1"}),
    ("inference/instruct/projection", {"trait": TRAIT, "prompt_set": PROMPT_SET, "id": "../../../secret"}),
    ("inference/instruct/projection", {"trait": TRAIT, "prompt_set": PROMPT_SET, "id": "1", "compare": ".."}),
    ("steering/instruct/results", {"trait": TRAIT, "position": "../..", "prompt_set": PROMPT_SET}),
    ("steering/instruct/responses", {"trait": TRAIT, "position": POSITION, "prompt_set": "/etc", "run": "baseline"}),
    ("steering/..%2F..%2F/results", {"trait": TRAIT, "position": POSITION, "prompt_set": PROMPT_SET}),
]


def test_traversal_is_refused_and_reads_nothing(tree):
    opened: list[str] = []
    watching = [False]

    def audit(event, args):
        if watching[0] and event == "open" and isinstance(args[0], (str, bytes, Path)):
            opened.append(str(args[0]))

    sys.addaudithook(audit)  # cannot be removed; it only records while `watching`
    outside = tree.parent
    with running(tree) as url:
        host, port = url.removeprefix("http://").split(":")
        statuses = {}
        watching[0] = True
        try:
            for path in TRAVERSALS:  # raw, so no client normalises the path first
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                statuses[path] = resp.status
                assert b"do-not-serve" not in body and b"root:" not in body
                conn.close()
            with TestClient(create_app(tree)) as client:
                for sub, params in TRAVERSAL_QUERIES:
                    r = client.get(f"/api/experiments/{EXPERIMENT}/{sub}", params=params)
                    statuses[f"{sub} {params}"] = r.status_code
        finally:
            watching[0] = False
    assert all(400 <= s < 500 for s in statuses.values()), statuses
    leaked = [p for p in opened if "secret" in p or "passwd" in p
              or (p.startswith(str(outside)) and not p.startswith(str(tree)))]
    assert leaked == []
    # the hook does see the server's reads: a legitimate request opens files under the tree
    watching[0] = True
    try:
        with TestClient(create_app(tree)) as client:
            ok(client, f"/api/experiments/{EXPERIMENT}/extraction/base")
    finally:
        watching[0] = False
    assert any(p.startswith(str(tree)) and p.endswith("base.json") for p in opened)


def test_a_symlink_out_of_the_tree_is_refused(tmp_path):
    root = tmp_path / "experiments"
    lay = make_fixture_experiment(root)
    (tmp_path / "secret.json").write_text('{"secret": "do-not-serve"}')
    link = lay.projection_path("instruct", TRAIT, PROMPT_SET, 7)
    link.symlink_to(tmp_path / "secret.json")
    r = TestClient(create_app(root)).get(
        f"/api/experiments/{EXPERIMENT}/inference/instruct/projection",
        params={"trait": TRAIT, "prompt_set": PROMPT_SET, "id": "7"})
    assert r.status_code == 400 and "outside" in r.json()["detail"]
    assert "do-not-serve" not in r.text


def test_plotly_is_served_locally_and_the_page_uses_no_cdn(client):
    page = client.get("/").text
    assert '<script src="/vendor/plotly.min.js">' in page and "http" not in page.split("<body")[0]
    js = client.get("/vendor/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000 and b"plotly" in js.content[:2000].lower()
    assert "fetch(" in client.get("/static/app.js").text


def test_cli_refuses_a_missing_directory(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and err.count("\n") == 1


def test_layout_discovery_helpers(tmp_path):
    from trait_pipeline.layout import experiments

    lay = make_fixture_experiment(tmp_path)
    for pid in (10, 3):
        (lay.projections_dir("instruct", TRAIT, PROMPT_SET) / f"{pid}.json").write_text("{}")
    assert lay.projection_ids("instruct", TRAIT, PROMPT_SET) == ["1", "2", "3", "10"]
    assert lay.projection_sets("rm_lora", TRAIT) == [PROMPT_SET]
    assert lay.projection_traits("rm_lora", replayed_from="instruct") == [TRAIT]
    assert lay.projection_sets("base", TRAIT) == []
    assert lay.evaluation_variants() == ["base", "instruct"]
    assert [(p, c) for p, c, _ in lay.logit_lens_files(TRAIT, "base")] == [(POSITION, "residual")]
    (tmp_path / "empty").mkdir()
    assert experiments(tmp_path) == [EXPERIMENT]
    assert experiments(tmp_path / "missing") == []
