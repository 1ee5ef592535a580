"""The dashboard API under hostile names: never a 500, never a byte from outside the tree.

Hypothesis throws names at every endpoint (path segments and query values): control
characters, separators, ``..``, over-long names, non-ASCII, plus the valid names mixed in.
The tree holds symlinks that lead outside it (an experiment, a trait, a variant, a results
file, a projection); they must be skipped in listings, never block a view, and never be read.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from dashboard_fixture import EXPERIMENT, POSITION, PROMPT_SET, TRAIT, make_fixture_experiment
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trait_pipeline.serve import create_app

MARKER = "OUTSIDE-MARKER-7f3a"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    root = base / "experiments"
    lay = make_fixture_experiment(root)
    outside = base / "outside"
    # a look-alike experiment tree outside, so following a link would find real-looking data
    make_fixture_experiment(outside)
    for f in outside.rglob("*.json"):
        data = json.loads(f.read_text())
        if isinstance(data, dict):
            f.write_text(json.dumps({**data, "marker": MARKER}))
    (base / "secret.json").write_text(f'{{"secret": "{MARKER}"}}')
    ext = outside / EXPERIMENT
    (root / "evil_exp").symlink_to(ext)                                         # an experiment
    (lay.root / "extraction" / "demo" / "evil_trait").symlink_to(ext / "extraction" / "demo" / "optimism")
    (lay.root / "extraction" / "demo" / "optimism" / "evil_variant").symlink_to(
        ext / "extraction" / "demo" / "optimism" / "base")                      # a variant
    (lay.root / "extraction" / "_evaluation" / "evil_eval.json").symlink_to(base / "secret.json")
    steer = next((lay.root / "steering").rglob("results.json")).parent.parent
    (steer / "evil_set").mkdir()
    (steer / "evil_set" / "results.json").symlink_to(base / "secret.json")      # a results file
    proj = lay.projection_path("instruct", TRAIT, PROMPT_SET, 7)
    proj.unlink(missing_ok=True)
    proj.symlink_to(base / "secret.json")                                       # a projection
    (lay.root / "inference" / "evil_inf").symlink_to(ext / "inference" / "instruct")
    return root


@pytest.fixture(scope="module")
def client(tree):
    return TestClient(create_app(tree), raise_server_exceptions=False)


def seg(name: str) -> str:
    """A path segment as a hostile client sends it: everything escaped, dots too (else the
    HTTP client itself would resolve ``..`` before sending)."""
    return quote(name, safe="").replace(".", "%2E")


def _check(client, tree: Path, url: str, params: dict | None = None):
    r = client.get(url, params=params)
    assert r.status_code != 500, (url, params, r.text[:300])
    assert r.status_code < 500, (url, params, r.status_code)
    assert MARKER not in r.text, (url, params)
    assert str(tree) not in r.text and str(tree.parent) not in r.text, (url, params, r.text[:300])
    return r


def test_links_leading_outside_are_skipped_and_never_block_a_view(client, tree):
    assert _check(client, tree, "/api/experiments").json() == {"experiments": [EXPERIMENT]}
    ov = _check(client, tree, f"/api/experiments/{EXPERIMENT}").json()
    assert "demo/evil_trait" not in ov["extraction"]["traits"]
    assert "evil_variant" not in ov["extraction"]["variants"] and "evil_eval" not in ov["extraction"]["variants"]
    assert "evil_inf" not in ov["inference"]["variants"]
    r = _check(client, tree, f"/api/experiments/{EXPERIMENT}/extraction/base")
    assert r.status_code == 200 and "evil" not in r.text
    variant = next((tree / EXPERIMENT / "steering").rglob("results.json")).parts[-4]
    r = _check(client, tree, f"/api/experiments/{EXPERIMENT}/steering/{variant}", {"trait": TRAIT})
    assert r.status_code == 200 and "evil_set" not in r.text
    r = _check(client, tree, f"/api/experiments/{EXPERIMENT}/inference/instruct")
    assert r.status_code == 200 and '"7"' not in r.text
    for url in ("/api/experiments/evil_exp", "/api/experiments/evil_exp/extraction/base",
                f"/api/experiments/{EXPERIMENT}/extraction/evil_eval"):
        assert _check(client, tree, url).status_code in (400, 404)
    r = _check(client, tree, f"/api/experiments/{EXPERIMENT}/steering/{variant}/results",
               {"trait": TRAIT, "position": POSITION, "prompt_set": "evil_set"})
    assert r.status_code == 400


@pytest.mark.parametrize("name", ["a" * 256, "a" * 101, "base\n", "ba\x00se", "ba\tse", "b\u00e4se",
                                  "..", ".hidden", "a/b", "a\\b", " base", "base "])
def test_bad_names_are_400_not_500(client, tree, name):
    for url, params in (
        (f"/api/experiments/{seg(name)}", None),
        (f"/api/experiments/{EXPERIMENT}/extraction/{seg(name)}", None),
        (f"/api/experiments/{EXPERIMENT}/steering/base", {"trait": f"demo/{name}"}),
        (f"/api/experiments/{EXPERIMENT}/inference/{seg(name)}", None),
        (f"/api/experiments/{EXPERIMENT}/inference/instruct/projection",
         {"trait": TRAIT, "prompt_set": name, "id": "0"}),
    ):
        r = _check(client, tree, url, params)
        assert r.status_code in (400, 404), (url, params, r.status_code, r.text)
        if len(name) > 100 or any(c in name for c in "\n\x00\t/\\"):
            assert r.status_code == 400, (url, params, r.text)


VALID = {"experiment": [EXPERIMENT, "evil_exp"], "variant": ["base", "instruct", "rm_lora", "evil_variant"],
         "trait": [TRAIT, "demo/evil_trait"], "position": [POSITION, "response__5"],
         "prompt_set": [PROMPT_SET, "steering", "evil_set"], "id": ["0", "7"], "run": ["baseline"]}
hostile = st.one_of(
    st.text(min_size=0, max_size=12),
    st.text(alphabet=string.printable + "\x00\x7f\u202e\u00e4", min_size=1, max_size=40),
    st.sampled_from(["..", ".", "/", "%2e%2e", "a/../b", "~", "con", "x" * 300, "demo/" + "y" * 255,
                     "demo\n/optimism", "response[:5]\n", "-1", "1e999", "NaN"]),
)


def name(kind: str):
    return st.one_of(st.sampled_from(VALID[kind]), hostile)


ENDPOINTS = {
    "overview": lambda a: (f"/api/experiments/{a['experiment']}", None),
    "extraction": lambda a: (f"/api/experiments/{a['experiment']}/extraction/{a['variant']}", None),
    "steering_index": lambda a: (f"/api/experiments/{a['experiment']}/steering/{a['variant']}",
                                 {"trait": a["trait"]}),
    "steering": lambda a: (f"/api/experiments/{a['experiment']}/steering/{a['variant']}/results",
                           {"trait": a["trait"], "position": a["position"], "prompt_set": a["prompt_set"]}),
    "responses": lambda a: (f"/api/experiments/{a['experiment']}/steering/{a['variant']}/responses",
                            {"trait": a["trait"], "position": a["position"],
                             "prompt_set": a["prompt_set"], "run": a["run"]}),
    "inference_index": lambda a: (f"/api/experiments/{a['experiment']}/inference/{a['variant']}", None),
    "projection": lambda a: (f"/api/experiments/{a['experiment']}/inference/{a['variant']}/projection",
                             {"trait": a["trait"], "prompt_set": a["prompt_set"], "id": a["id"],
                              "compare": a["variant2"]}),
}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_fuzzed_names_never_500_never_outside(client, tree, endpoint):
    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.fixed_dictionaries({"experiment": name("experiment"), "variant": name("variant"),
                                  "variant2": name("variant"), "trait": name("trait"),
                                  "position": name("position"), "prompt_set": name("prompt_set"),
                                  "id": name("id"), "run": name("run")}))
    def probe(args):
        path_args = {k: seg(v) if k in ("experiment", "variant") else v for k, v in args.items()}
        url, params = ENDPOINTS[endpoint](path_args)
        _check(client, tree, url, params)

    probe()
