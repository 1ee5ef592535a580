"""The dashboard's review API over real runs: list, config, diff, variant info, and refusals."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from trait_pipeline.serve import create_app


@pytest.fixture(scope="module")
def client(review_runs):
    return TestClient(create_app(review_runs["root"]))


def test_runs_config_and_diff(client):
    runs = client.get("/api/experiments/demo/runs").json()["runs"]
    assert len(runs) == 3 and all(r["is_data"] and r["has_snapshot"] for r in runs)
    inst = next(r["run"] for r in runs if r["model_variant"] == "instruct")
    lora = next(r["run"] for r in runs if r["model_variant"] == "rm_lora")
    cfg = client.get("/api/experiments/demo/config", params={"run": lora}).json()
    assert cfg["snapshot"]["config"]["model_variant"]["lora"] == "demo:rm_lora"
    assert cfg["record"]["status"] == "done" and "lora: demo:rm_lora" in cfg["text"]
    d = client.get("/api/experiments/demo/diff", params={"a": inst, "b": lora}).json()
    assert d["same"] is False and "+model_variant.lora: demo:rm_lora" in d["text"]
    info = client.get("/api/experiments/demo").json()["variant_info"]
    assert info["rm_lora"] == {"model": "demo:instruct", "lora": "demo:rm_lora"}


def test_steering_and_extraction_link_their_runs(client):
    st = client.get("/api/experiments/demo/steering/rm_lora/results", params={
        "trait": "demo/optimism", "position": "response[:5]", "prompt_set": "steering"}).json()
    assert all(r["config_run"] and "/rm_lora/" in r["config_run"] for r in st["runs"])
    ex = client.get("/api/experiments/demo/extraction/base").json()
    assert ex["config_runs"]["demo/optimism"][0]["run"].startswith("extraction/")


@pytest.mark.parametrize("run, status", [("../../etc", 400), ("/etc", 400),
                                         ("extraction/nope", 404)])
def test_refusals(client, run, status):
    assert client.get("/api/experiments/demo/config", params={"run": run}).status_code == status
