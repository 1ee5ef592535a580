"""The live chat in headless Chromium on the demo family: a message streams tokens and a
curve, the variant selector switches the model, compare mode answers with two variants
(side by side, and as a replay on the same tokens), and a client that goes away mid-answer
stops the server's generation. Also: multi-trait overlays and massive-dims cleaning in
Trait dynamics."""

from __future__ import annotations

import json
import math
import time
from urllib.parse import urlencode

import pytest
from infer_helpers import TRAIT, compose, write_demo_vectors

from trait_pipeline.chat.routes import ChatSettings
from trait_pipeline.infer import run
from trait_pipeline.layout import Layout
from trait_pipeline.serve import CHROMIUM, create_app, running
from trait_pipeline.vector_store import load_vector, save_vector

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
if not __import__("pathlib").Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM}", allow_module_level=True)

OTHER = "demo/gloom"  # the optimism vectors turned around: a second trait whose curve mirrors
CAP = 4000


@pytest.fixture(scope="module")
def root(tmp_path_factory, demo_family):
    root = tmp_path_factory.mktemp("chat_browser")
    lay = write_demo_vectors(root, layers=(10,), methods=("mean_diff",))
    src = lay.vector_path(TRAIT, "base", "all[:]", "residual", "mean_diff", 10)
    vec, meta = load_vector(src)
    save_vector(lay.vector_path(OTHER, "base", "all[:]", "residual", "mean_diff", 10), -vec,
                {**meta, "trait": OTHER})
    run(compose("infer", f"paths.experiments={root}", "model_variant=instruct", "limit=1",
                "generation.max_new_tokens=6", "massive.calibrate=true", "massive.min_ratio=0"))
    # Trait dynamics overlay: OTHER's projection file is optimism's with the vector reversed
    p = json.loads(lay.projection_path("instruct", TRAIT, "demo", 1).read_text())
    p["projections"] = {ph: [-x for x in v] for ph, v in p["projections"].items()}
    p["metadata"]["vector_source"]["trait"] = OTHER
    p.pop("massive", None)
    path = lay.projection_path("instruct", OTHER, "demo", 1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(p))
    return root


@pytest.fixture(scope="module")
def app(root):
    return create_app(root, ChatSettings(max_new_tokens=CAP, max_resident=2, device="cpu",
                                         default_max_new_tokens=5))


@pytest.fixture(scope="module")
def server(root, app):
    with running(root, app=app) as url:
        yield url


def visit(page, server, **params):
    page.goto(f"{server}/?{urlencode(params)}")
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=30_000)
    assert page.evaluate("document.body.dataset.error || null") is None
    return page


def send(page, text: str):
    n = int(page.evaluate("document.body.dataset.answered || '0'"))
    page.fill("#chat-input", text)
    page.click("#chat-send")
    page.wait_for_function(f"Number(document.body.dataset.answered || 0) > {n}", timeout=60_000)
    assert page.evaluate("document.body.dataset.chat") == "idle"


def answer_tokens(page, pane: str) -> list[str]:
    return page.eval_on_selector_all(f"#chat-log-{pane} .msg.assistant:last-of-type .tok",
                                     "els => els.map(e => e.textContent)")


def plotted(page, div: str) -> list[dict]:
    return page.evaluate(f"""() => (document.getElementById({div!r}).data || []).map(t => ({{
        name: t.name, y: Array.from(t.y || []) }}))""")


def test_send_a_message_tokens_and_curves_appear(page, server):
    visit(page, server, exp="demo", view="chat", cvariant="instruct")
    send(page, "how is the game going ?")
    tokens = answer_tokens(page, "a")
    assert 1 <= len(tokens) <= 5
    curves = {c["name"].split(" ")[0]: c["y"] for c in plotted(page, "chat-plot-a")}
    assert set(curves) == {TRAIT, OTHER}  # every trait with vectors, on one token axis
    assert len(curves[TRAIT]) == len(tokens) and all(math.isfinite(y) for y in curves[TRAIT])
    assert curves[OTHER] == pytest.approx([-y for y in curves[TRAIT]], abs=1e-4)
    # z-scored against each trait's own prompt tokens: the mirror stays a mirror
    page.select_option("#chat-norm", "z")
    page.wait_for_function("document.body.dataset.ready === 'true'")
    z = {c["name"].split(" ")[0]: c["y"] for c in plotted(page, "chat-plot-a")}
    assert z[OTHER] == pytest.approx([-y for y in z[TRAIT]], abs=1e-3)
    # a second turn goes out with the history; the conversation survives a reload (localStorage)
    send(page, "what do you think about the concert ?")
    assert page.locator("#chat-log-a .msg.user").count() == 2
    page.reload()
    page.wait_for_function("document.body.dataset.ready === 'true'")
    assert page.locator("#chat-log-a .msg.user").count() == 2
    # Save writes under inference/{variant}/chat/ and the link loads that copy
    page.click("#chat-save")
    page.wait_for_function("document.body.dataset.saved !== undefined")
    saved = page.evaluate("document.body.dataset.saved")
    assert saved.startswith("demo/inference/instruct/chat/") and saved.endswith(".json")
    link = page.get_attribute("#chat-link a", "href")
    page.evaluate("localStorage.clear()")
    page.goto(link)
    page.wait_for_function("document.body.dataset.ready === 'true'")
    assert page.locator("#chat-log-a .msg.user").count() == 2


def test_switch_variant(page, server, app):
    visit(page, server, exp="demo", view="chat", cvariant="instruct", ctraits=TRAIT)
    page.select_option("#chat-variant", "rm_lora")
    page.wait_for_function("document.body.dataset.ready === 'true'")
    assert "cvariant=rm_lora" in page.url
    send(page, "tell me about the garden .")
    assert page.inner_text("#chat-log-a .chat-head") == "rm_lora"
    assert "rm_lora" in page.inner_text("#chat-log-a .msg.assistant .hint")
    (curve,) = plotted(page, "chat-plot-a")
    assert curve["name"].startswith(TRAIT) and len(curve["y"]) == len(answer_tokens(page, "a"))
    resident = [r["variant"] for r in app.state.chat_pool.status()["resident"]]
    assert "rm_lora" in resident


@pytest.mark.parametrize("mode", ["side", "replay"])
def test_compare_two_variants(page, server, mode):
    visit(page, server, exp="demo", view="chat", cvariant="instruct", cmode=mode,
          cvariant_b="rm_lora", ctraits=TRAIT)
    assert page.is_visible("#chat-pane-b")
    send(page, "how is the game going ?")
    a, b = answer_tokens(page, "a"), answer_tokens(page, "b")
    assert a and b
    (ya,), (yb,) = plotted(page, "chat-plot-a"), plotted(page, "chat-plot-b")
    assert len(ya["y"]) == len(a) and len(yb["y"]) == len(b)
    if mode == "replay":  # rm_lora read instruct's tokens: curves align token by token
        assert b == a
        assert "reading instruct" in page.inner_text("#chat-log-b .chat-head")
        assert ya["y"] != yb["y"]


def _total(app) -> int:
    return app.state.chat_pool.status()["tokens_total"].get("demo/base", 0)


def _idle(app) -> bool:
    return "demo/base" not in app.state.chat_pool.status()["queues"]


def test_disconnect_mid_answer_stops_generation(browser, server, app):
    pg = browser.new_page()
    pg.goto(f"{server}/?exp=demo&view=chat&cvariant=base")
    pg.wait_for_function("document.body.dataset.ready === 'true'", timeout=30_000)
    before = _total(app)
    # a long answer (EOS held back), read until a few tokens arrived, then the tab goes away
    pg.evaluate("""(cap) => { window.seen = 0; fetch('/api/chat/stream', {method: 'POST',
        headers: {'content-type': 'application/json'},
        body: JSON.stringify({experiment: 'demo', variant: 'base', traits: [{trait: 'demo/optimism'}],
          messages: [{role: 'user', content: 'the game is'}], max_new_tokens: cap, min_new_tokens: cap})})
        .then(async r => { const rd = r.body.getReader(); const dec = new TextDecoder();
          for (;;) { const {value, done} = await rd.read(); if (done) break;
            window.seen += (dec.decode(value).match(/event: token/g) || []).length; } }); }""", CAP)
    pg.wait_for_function("window.seen >= 5", timeout=30_000)
    assert not _idle(app)
    pg.close()  # the client disconnects
    deadline = time.monotonic() + 15
    while not _idle(app) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _idle(app), "the server kept generating after the client left"
    stopped_at = _total(app)
    time.sleep(1.0)
    assert _total(app) == stopped_at  # nothing more is generated
    assert stopped_at - before < CAP


def test_dynamics_overlays_traits_and_toggles_massive_cleaning(page, server, root):
    visit(page, server, exp="demo", view="dynamics", variant="instruct", trait=TRAIT,
          set="demo", id="1", smooth="0", center="0", cosine="0")
    lay = Layout(root, "demo")
    proj = json.loads(lay.projection_path("instruct", TRAIT, "demo", 1).read_text())
    raw = proj["projections"]["prompt"] + proj["projections"]["response"]
    page.check("#dyn-overlay input[value='demo/gloom']")
    page.wait_for_function("document.body.dataset.ready === 'true'")
    assert "overlay=demo%2Fgloom" in page.url or "overlay=demo/gloom" in page.url
    main, other = plotted(page, "dyn-plot")[:2]
    assert main["y"] == pytest.approx(raw, abs=1e-6)
    assert other["y"] == pytest.approx([-y for y in raw], abs=1e-6)
    # massive dims: the panel shows the calibration, the toggle drops them from the curve
    page.wait_for_function("document.getElementById('dyn-massive').data !== undefined")
    calib = json.loads(lay.massive_activations_path("instruct", "demo").read_text())
    assert calib["dims"], "min_ratio=0: the largest dims count"
    title = page.evaluate("document.getElementById('dyn-massive').layout.title.text")
    assert ", ".join(str(d) for d in calib["dims"]) in title
    page.check("#dyn-clean")
    page.wait_for_function("document.body.dataset.ready === 'true'")
    m = proj["massive"]
    expected = [y - sum(m["values"][ph][str(d)][t] * m["vec_components"][str(d)] for d in m["dims"])
                for ph in ("prompt", "response") for t, y in enumerate(proj["projections"][ph])]
    assert plotted(page, "dyn-plot")[0]["y"] == pytest.approx(expected, abs=1e-4)
