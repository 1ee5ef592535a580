"""The chat's HTTP API: variants from the preset, SSE events in order, the token cap,
queue positions, save/load under ``inference/{variant}/chat/``, and one-line 400/404s."""

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from infer_helpers import TRAIT, write_demo_vectors

from trait_pipeline.chat.routes import ChatSettings
from trait_pipeline.layout import Layout
from trait_pipeline.serve import create_app

MSG = [{"role": "user", "content": "how is the game going ?"}]


@pytest.fixture(scope="module")
def root(tmp_path_factory, demo_family):
    root = tmp_path_factory.mktemp("chat_routes")
    write_demo_vectors(root, layers=(10,), methods=("mean_diff",))
    return root


@pytest.fixture(scope="module")
def client(root):
    app = create_app(root, ChatSettings(max_new_tokens=6, max_resident=1, device="cpu"))
    with TestClient(app) as c:
        c.app_pool = app.state.chat_pool
        yield c


def events(client, path="/api/chat/stream", **body):
    payload = {"experiment": "demo", "variant": "instruct", "traits": [{"trait": TRAIT}],
               "messages": MSG, **body}
    with client.stream("POST", path, json=payload) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    out = []
    for chunk in text.split("\n\n"):
        lines = chunk.strip().splitlines()
        if lines:
            assert lines[0].startswith("event: ")
            ev = json.loads(lines[1].removeprefix("data: "))
            assert lines[0] == f"event: {ev['type']}"
            out.append(ev)
    return out


def test_options_name_the_presets_variants_and_traits(client):
    body = client.get("/api/chat/demo").json()
    assert [v["name"] for v in body["variants"]] == ["base", "instruct", "rm_lora"]
    lora = next(v for v in body["variants"] if v["name"] == "rm_lora")
    assert lora["lora"] == "demo:rm_lora" and lora["estimate_bytes"] > 0
    assert body["traits"] == [{"trait": TRAIT, "layers": [10], "methods": ["mean_diff"]}]
    assert body["extraction_variant"] == "base" and body["default_layer"] == 10


def test_stream_events_cap_and_memory(client):
    evs = events(client, max_new_tokens=50, min_new_tokens=50)
    kinds = [e["type"] for e in evs]
    assert kinds[0] == "status" and "capped at 6" in evs[0]["message"]
    assert "prompt" in kinds and kinds[-1] == "done"
    assert kinds.count("token") == 6 and evs[-1]["reason"] == "max_new_tokens"
    w = next(e for e in evs if e["type"] == "prompt")["watches"][0]
    assert (w["trait"], w["layer"], w["method"], w["model_variant"]) == (TRAIT, 10, "mean_diff", "base")
    status = client.get("/api/chat/status").json()
    assert status["settings"]["max_new_tokens"] == 6
    (res,) = status["pool"]["resident"]
    assert res["variant"] == "instruct" and res["bytes"] > 1e6 and not res["busy"]


def test_replay_reads_the_same_tokens(client):
    a = events(client)[-1]
    evs = events(client, "/api/chat/replay", variant="rm_lora", response_ids=a["response_ids"],
                 response_text=a["response_text"], source_variant="instruct")
    assert [e["id"] for e in evs if e["type"] == "token"] == a["response_ids"]
    assert evs[-1]["replayed_from"] == "instruct"
    # max_resident=1: loading rm_lora unloaded instruct
    assert [r["variant"] for r in client.get("/api/chat/status").json()["pool"]["resident"]] == ["rm_lora"]


def test_second_request_waits_with_its_position(client):
    pool = client.app_pool
    blocker = pool.enqueue(("demo", "instruct"))  # someone else is generating on instruct
    got = []
    t = threading.Thread(target=lambda: got.extend(events(client)))
    t.start()
    time.sleep(1.0)
    assert client.get("/api/chat/status").json()["pool"]["queues"]["demo/instruct"] == 2
    pool.release(blocker)
    t.join(60)
    queued = [e for e in got if e["type"] == "status" and e.get("state") == "queued"]
    assert any(e.get("position") == 1 for e in queued)
    assert got[-1]["type"] == "done"


def test_save_and_load_through_the_layout(client, root):
    chat = {"id": "c1", "nodes": {"n1": {"content": "hi"}}}
    r = client.post("/api/chat/save", json={"experiment": "demo", "variant": "instruct",
                                             "chat": chat, "id": "c1"})
    assert r.status_code == 200
    path = Layout(root, "demo").chat_path("instruct", "c1")
    assert r.json()["file"] == path.relative_to(root).as_posix() and path.is_file()
    back = client.get("/api/chat/demo/saved/instruct/c1").json()
    assert back["chat"] == chat and back["schema_version"] == 1


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), [
    ("post", "/api/chat/stream", {"variant": "../x"}, 400, "bad model variant"),
    ("post", "/api/chat/stream", {"variant": "nope"}, 404, "it defines: base, instruct, rm_lora"),
    ("post", "/api/chat/stream", {"experiment": "a/b"}, 400, "bad experiment"),
    ("post", "/api/chat/stream", {"traits": [{"trait": "../etc"}]}, 400, "bad trait"),
    ("post", "/api/chat/stream", {"traits": [{"trait": "demo/none"}]}, 404, "no vectors"),
    ("post", "/api/chat/stream", {"messages": [{"role": "assistant", "content": "x"}]}, 400,
     "expected a user turn"),
    ("post", "/api/chat/stream", {"clean": "some"}, 400, "bad clean"),
    ("post", "/api/chat/save", {"id": "../../x", "chat": {}}, 400, "bad chat id"),
    ("get", "/api/chat/demo/saved/instruct/nothing", None, 404, "no saved chat"),
    ("get", "/api/chat/nope", None, 404, "no experiment"),
])
def test_bad_requests_are_one_line(client, root, method, path, body, status, words):
    payload = {"experiment": "demo", "variant": "instruct", "traits": [{"trait": TRAIT}],
               "messages": MSG, **(body or {})}
    r = client.post(path, json=payload) if method == "post" else client.get(path)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert words in detail and "\n" not in detail
    assert not (root / "x").exists() and not (root / "demo" / "x.json").exists()
