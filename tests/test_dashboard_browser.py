"""The dashboard in headless Chromium: every view plots the values of the files on disk,
the variant selector switches the data, variant compare shows both, no console errors.

Runs on a small fixture tree in the documented formats and, when ``tests/conftest.py``
provides ``demo_experiment``, on the real demo pipeline's outputs too. Expected values are
read from the files directly (not through the API), so the test checks the whole chain.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from dashboard_fixture import make_fixture_experiment

from trait_pipeline.serve import CHROMIUM, running

# both parametrisations ask for the whole demo (getfixturevalue): one worker builds it once
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("_demo_master")]
playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM}", allow_module_level=True)


def _root_of(demo) -> Path:
    """The experiments directory behind whatever the shared fixture returns."""
    for attr in ("experiments", "root"):
        if hasattr(demo, attr) and not isinstance(demo, (str, Path)):
            demo = getattr(demo, attr)
            break
    path = Path(demo)
    if any((path / area).is_dir() for area in ("extraction", "steering", "inference")):
        return path.parent  # an experiment folder, not the experiments directory
    return path


@pytest.fixture(scope="module",
                params=["fixture", pytest.param("demo", marks=pytest.mark.slow)])
def root(request, tmp_path_factory) -> Path:
    """The fixture tree, or the demo pipeline's outputs: ``$TRAIT_PIPELINE_DASHBOARD_DEMO``
    (an experiments dir the demo already filled) or the session's demo run from conftest
    (read only here, so the shared master tree is used, not a per-test copy)."""
    if request.param == "fixture":
        root = tmp_path_factory.mktemp("dash_browser") / "experiments"
        make_fixture_experiment(root)
        return root
    given = os.environ.get("TRAIT_PIPELINE_DASHBOARD_DEMO")
    if given:
        return _root_of(given)
    try:
        demo = request.getfixturevalue("_demo_master")
    except pytest.FixtureLookupError:
        pytest.skip("no demo experiment fixture in tests/conftest.py")
    return _root_of(demo)


@pytest.fixture(scope="module")
def server(root):
    with running(root) as url:
        yield url


def experiment(root: Path) -> Path:
    found = sorted(p for p in root.iterdir()
                   if any((p / a).is_dir() for a in ("extraction", "steering", "inference")))
    return found[0]


def visit(page, server, **params):
    page.goto(f"{server}/?{urlencode(params)}")
    return settle(page)


def settle(page):
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=30_000)
    err = page.evaluate("document.body.dataset.error || null")
    assert err is None, err
    return page


def plotted(page, div: str) -> list[dict]:
    return page.evaluate(
        f"""() => document.getElementById({div!r}).data.map(t => ({{
            name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || []),
            z: t.z ? t.z.map(r => Array.from(r)) : null }}))""")


def change(page, selector: str, value: str):
    page.select_option(selector, value)
    return settle(page)


def url_state(page) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def read(path: Path):
    return json.loads(path.read_text())


# ---- extraction -----------------------------------------------------------------------------
def evaluation_rows(exp: Path, variant: str) -> list[dict]:
    data = read(exp / "extraction" / "_evaluation" / f"{variant}.json")
    return data.get("results") or data.get("all_results")


def check_extraction_heatmap(page, exp: Path, variant: str, trait: str) -> list:
    site = page.eval_on_selector("#ext-site", "s => s.options[s.selectedIndex].text")
    position, component = site.split(" / ")
    (heat,) = plotted(page, "ext-heatmap")
    rows = {(r["method"], r["layer"]): r for r in evaluation_rows(exp, variant)
            if r["trait"] == trait and str(r["position"]) == position
            and r.get("component", "residual") == component}
    assert rows and len(heat["x"]) * len(heat["y"]) == len(rows)
    for i, method in enumerate(heat["y"]):
        for j, layer in enumerate(heat["x"]):
            assert heat["z"][i][j] == pytest.approx(rows[(method, layer)]["val_accuracy"])
    return heat["z"]


def test_extraction_view_plots_the_evaluation_file(page, server, root):
    exp = experiment(root)
    variants = sorted(p.stem for p in (exp / "extraction" / "_evaluation").glob("*.json"))
    trait = min({r["trait"] for r in evaluation_rows(exp, variants[0])})
    visit(page, server, exp=exp.name, view="extraction", variant=variants[0], trait=trait,
          metric="val_accuracy")
    z0 = check_extraction_heatmap(page, exp, variants[0], trait)
    best = page.inner_text("#ext-best")
    assert trait in best
    assert "95 % CI" in best and "p vs null" in best
    # per layer: each method's value with its 95 % interval, over the null's band
    traces = page.evaluate("""() => document.getElementById("ext-null").data.map(t => ({
        fill: t.fill || null, err: t.error_y ? Array.from(t.error_y.array || []) : [] }))""")
    rows = [r for r in evaluation_rows(exp, variants[0]) if r["trait"] == trait]
    if any("val_accuracy_ci" in r for r in rows):
        assert any(t["fill"] == "tonexty" for t in traces)
        assert any(any(v is not None for v in t["err"]) for t in traces)
    lenses = sorted((exp / "extraction" / trait / variants[0] / "vectors").glob("*/*/logit_lens.json"))
    if lenses:
        first = next(iter(read(lenses[0])["methods"].values()))
        token = next(iter(first.values()))["toward"][0]["token"]
        assert token in page.inner_text("#ext-lens")
    if len(variants) > 1:  # the selector switches the data
        change(page, "#variant", variants[1])
        z1 = check_extraction_heatmap(page, exp, variants[1], trait)
        assert z1 != z0
        assert url_state(page)["variant"] == variants[1]


# ---- steering -------------------------------------------------------------------------------
def steering_files(exp: Path) -> dict[tuple[str, str], list[Path]]:
    out = defaultdict(list)
    for p in sorted(exp.glob("steering/*/*/*/*/*/results.json")):
        cat, name, variant = p.relative_to(exp / "steering").parts[:3]
        out[(f"{cat}/{name}", variant)].append(p)
    return out


def expected_steering(path: Path, method: str, component: str, min_coh: float):
    data = read(path)
    base = data["baseline"]["trait_mean"]
    cells, best = {}, {}
    for run in data["runs"]:
        vecs = run["config"].get("vectors") or []
        if len(vecs) != 1 or run["config"].get("ablate") or run["config"].get("multi_layer"):
            continue
        v = vecs[0]
        if v.get("method") != method or v.get("component", "residual") != component:
            continue
        res = run["result"]
        cells[(v["layer"], float(v["weight"]))] = res["trait_mean"] - base
        if res.get("coherence_mean") is not None and res["coherence_mean"] >= min_coh:
            cur = best.get(v["layer"])
            if cur is None or res["trait_mean"] - base > cur - base:
                best[v["layer"]] = res["trait_mean"]
    return base, cells, best


def check_steering(page, div: str, path: Path, min_coh: float):
    method, component = page.eval_on_selector(
        "#steer-group", "s => s.options[s.selectedIndex].text").split(" / ")
    base, cells, best = expected_steering(path, method, component, min_coh)
    (heat,) = plotted(page, div)
    n = 0
    for i, layer in enumerate(heat["y"]):
        for j, coef in enumerate(heat["x"]):
            if heat["z"][i][j] is None:
                assert (int(layer), float(coef)) not in cells
                continue
            assert heat["z"][i][j] == pytest.approx(cells[(int(layer), float(coef))])
            n += 1
    assert n == len(cells) > 0
    return base, best


def test_steering_view_heatmap_best_line_responses_and_compare(page, server, root):
    exp = experiment(root)
    files = steering_files(exp)
    (trait, variant), paths = min(files.items())
    path = paths[0]
    visit(page, server, exp=exp.name, view="steering", variant=variant, trait=trait)
    assert page.input_value("#steer-coh") == "75"
    base, best = check_steering(page, "steer-heatmap", path, 75)
    lines = plotted(page, "steer-best")
    best_line = next(t for t in lines if t["name"].startswith(f"{variant}: best"))
    assert dict(zip(best_line["x"], best_line["y"])) == pytest.approx(best)
    base_line = next(t for t in lines if t["name"].startswith(f"{variant}: baseline"))
    assert base_line["y"] == pytest.approx([base, base])

    # the coherence slider re-selects the best run per layer
    page.eval_on_selector("#steer-coh", "el => { el.value = '0'; el.dispatchEvent(new Event('change')); }")
    settle(page)
    assert url_state(page)["coh"] == "0"
    _, _, best0 = expected_steering(path, *page.eval_on_selector(
        "#steer-group", "s => s.options[s.selectedIndex].text").split(" / "), 0)
    best_line = next(t for t in plotted(page, "steer-best") if t["name"].startswith(f"{variant}: best"))
    assert dict(zip(best_line["x"], best_line["y"])) == pytest.approx(best0)

    # the response browser shows the chosen run's file
    runs = [o for o in page.eval_on_selector_all("#steer-run option", "os => os.map(o => o.value)")]
    data = read(path)
    with_responses = [r for r in data["runs"] if r.get("responses") and r.get("key") in runs]
    if with_responses:
        run = with_responses[-1]
        change(page, "#steer-run", run["key"])
        rfile = path.parent / run["responses"]
        if not rfile.is_file():
            rfile = path.parent / "responses" / run["responses"]
        items = read(rfile)
        items = items["responses"] if isinstance(items, dict) else items
        shown = page.eval_on_selector_all("#steer-responses td:nth-child(2)",
                                          "tds => tds.map(t => t.textContent)")
        assert shown == [x["response"] for x in items]
        assert url_state(page)["run"] == run["key"]

    # side by side: another variant's heatmap from its own file
    others = [v for (t, v) in files if t == trait and v != variant]
    if others:
        change(page, "#steer-compare", others[0])
        assert page.is_visible("#steer-heatmap-b")
        other_path = next(p for p in files[(trait, others[0])]
                          if p.parent.parent.name == path.parent.parent.name
                          and p.parent.name == path.parent.name)
        check_steering(page, "steer-heatmap-b", other_path, 0)
        names = [t["name"] for t in plotted(page, "steer-best")]
        assert any(n.startswith(f"{variant}: best") for n in names)
        assert any(n.startswith(f"{others[0]}: best") for n in names)


# ---- trait dynamics ---------------------------------------------------------------------------
def projection_files(exp: Path) -> dict[str, list[Path]]:
    out = defaultdict(list)
    for p in sorted((exp / "inference").glob("*/projections/*/*/*/*.json")):
        out[p.relative_to(exp / "inference").parts[0]].append(p)
    return out


def file_series(path: Path) -> list[float]:
    proj = read(path)["projections"]
    proj = proj[0] if isinstance(proj, list) else proj
    return list(proj["prompt"]) + list(proj["response"])


def smooth3(xs):
    return [sum(xs[max(0, i - 1):i + 2]) / len(xs[max(0, i - 1):i + 2]) for i in range(len(xs))]


def test_dynamics_view_plots_projections_tokens_and_compare(page, server, root):
    exp = experiment(root)
    files = projection_files(exp)
    variant = min(files)
    path = files[variant][0]
    cat, name, pset, pid = path.relative_to(exp / "inference" / variant / "projections").parts
    trait, pid = f"{cat}/{name}", pid.removesuffix(".json")
    visit(page, server, exp=exp.name, view="dynamics", variant=variant, trait=trait, set=pset, id=pid,
          smooth=0, center=0, cosine=0)
    expected = file_series(path)
    main = plotted(page, "dyn-plot")[0]
    assert main["y"] == pytest.approx(expected, abs=1e-6)

    # tokens from the response file, the divider between prompt and response
    resp = read(exp / "inference" / variant / "responses" / pset / f"{pid}.json")
    n_prompt = len(resp["prompt"]["tokens"])
    shown = page.eval_on_selector_all("#dyn-tokens span[data-index]", "els => els.map(e => e.textContent)")
    assert shown[: n_prompt + len(resp["response"]["tokens"])] == resp["prompt"]["tokens"] + resp["response"]["tokens"]
    shapes = page.evaluate("document.getElementById('dyn-plot').layout.shapes.map(s => s.x0)")
    assert shapes[0] == pytest.approx(n_prompt - 0.5)

    # token highlight: clicking a token moves the marker and the URL
    target = min(n_prompt + 1, len(shown) - 1)
    page.dispatch_event(f"#dyn-tokens span[data-index='{target}']", "click")
    assert page.evaluate("document.getElementById('dyn-plot').layout.shapes[1].x0") == target
    assert page.get_attribute(f"#dyn-tokens span[data-index='{target}']", "class").endswith("current")
    assert url_state(page)["token"] == str(target)

    # smoothing and centring
    page.check("#dyn-smooth")
    settle(page)
    assert plotted(page, "dyn-plot")[0]["y"] == pytest.approx(smooth3(expected), abs=1e-6)
    page.check("#dyn-center")
    settle(page)
    centred = [v - expected[0] for v in expected]
    assert plotted(page, "dyn-plot")[0]["y"] == pytest.approx(smooth3(centred), abs=1e-6)
    vel = plotted(page, "dyn-velocity")[0]
    sm = smooth3(expected)
    assert vel["y"] == pytest.approx(smooth3([b - a for a, b in itertools.pairwise(sm)]), abs=1e-6)
    assert vel["x"][0] == 0.5
    page.uncheck("#dyn-smooth")
    settle(page)
    page.uncheck("#dyn-center")
    settle(page)

    # variant compare: overlay shows both, difference is main - other
    others = [v for v in sorted(files) if v != variant]
    if not others:
        return
    other = others[0]
    change(page, "#dyn-compare", other)
    traces = plotted(page, "dyn-plot")
    assert any(t["name"].startswith(f"{variant}:") for t in traces)
    assert any(t["name"].startswith(f"{other}") for t in traces)
    replay = exp / "inference" / other / "replay" / variant / "projections" / trait / pset / f"{pid}.json"
    own = exp / "inference" / other / "projections" / trait / pset / f"{pid}.json"
    other_series = file_series(replay if replay.is_file() else own)
    other_trace = next(t for t in traces if t["name"].startswith(other))
    assert other_trace["y"] == pytest.approx(other_series, abs=1e-6)
    change(page, "#dyn-mode", "diff")
    (diff,) = plotted(page, "dyn-plot")
    n = min(len(expected), len(other_series))
    assert diff["y"] == pytest.approx([a - b for a, b in zip(expected[:n], other_series[:n])], abs=1e-6)
    assert url_state(page)["mode"] == "diff" and url_state(page)["compare"] == other

    # switching the main variant changes the data
    change(page, "#dyn-compare", "")
    change(page, "#variant", other)
    switched = plotted(page, "dyn-plot")[0]["y"]
    assert switched == pytest.approx(file_series(own), abs=1e-6)
    assert not all(math.isclose(a, b) for a, b in zip(switched, expected)) or len(switched) != len(expected)


def test_url_carries_the_state(page, server, root):
    exp = experiment(root)
    files = projection_files(exp)
    variant = max(files)
    visit(page, server, exp=exp.name, view="dynamics", variant=variant)
    state = url_state(page)
    assert state["view"] == "dynamics" and state["variant"] == variant and state["exp"] == exp.name
    assert "trait" in state and "set" in state and "id" in state
    # the same URL in a fresh page shows the same view and selection
    page.goto(page.url)
    settle(page)
    assert url_state(page) == state
    assert page.is_visible("#view-dynamics") and not page.is_visible("#view-extraction")
    assert page.input_value("#variant") == variant
    page.click("#tabs button[data-view='steering']")
    settle(page)
    assert url_state(page)["view"] == "steering" and page.is_visible("#view-steering")


def test_screenshot_command_writes_one_png_per_view(root, tmp_path):
    from trait_pipeline.serve import CHAT_SHOTS, VIEWS

    out = tmp_path / "img"
    # as documented, in its own process (a second sync Playwright cannot share this one's loop)
    subprocess.run([sys.executable, "-m", "trait_pipeline.serve", str(root), "--screenshots", str(out),
                    "--experiment", experiment(root).name], check=True, timeout=300)
    pngs = sorted(out.glob("*.png"))
    # one per view that reads disk; the live chat alone and in compare mode where the experiment
    # is a preset the chat can load (the demo), not for the hand-made fixture tree
    expected = {f"dashboard-{v}.png" for v in VIEWS}
    if experiment(root).name == "demo":
        expected |= {name for name, *_ in CHAT_SHOTS}
    assert [p.name for p in pngs] == sorted(expected)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20_000 for p in pngs)
