"""Shared fixtures: the demo family, running stages as a user would, and demo experiment trees.

The expensive trees are built once per session and handed out as copies, so a test can write
into its tree without disturbing another.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Two xdist workers share the 2 cores, and each stage a test starts is a third process: with
# torch's default of one thread per core, OpenMP's spinning barriers make contended steps
# many times slower (measured 13.8x on the demo build). One thread per process, tests and
# the stages they start alike.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_stage(stage: str, *overrides: str, experiments: Path | None = None,
              check: bool = True, timeout: float = 900,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m trait_pipeline.<stage> <overrides>`` in a subprocess, as a user types it.

    >>> # run_stage("extract", "trait=demo/optimism", experiments=tmp_path)
    """
    cmd = [sys.executable, "-m", f"trait_pipeline.{stage}", *overrides]
    if experiments is not None:
        cmd.append(f"paths.experiments={experiments}")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "TQDM_DISABLE": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd[2:])} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def demo_family():
    from trait_pipeline.demo_family import ensure_demo_family

    return ensure_demo_family(progress=False)


@pytest.fixture(scope="session")
def _extracted_master(tmp_path_factory, demo_family) -> Path:
    root = tmp_path_factory.mktemp("extracted") / "experiments"
    run_stage("extract", experiments=root)
    return root


@pytest.fixture
def extracted(_extracted_master, tmp_path) -> Path:
    """An experiments dir holding the default demo extraction (demo/optimism, base), a copy."""
    dst = tmp_path / "experiments"
    shutil.copytree(_extracted_master, dst)
    return dst


@pytest.fixture(scope="session")
def _demo_master(tmp_path_factory, demo_family) -> Path:
    root = tmp_path_factory.mktemp("demo") / "experiments"
    proc = subprocess.run([sys.executable, "-m", "trait_pipeline.demo", f"paths.experiments={root}"],
                          cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"},
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"demo failed\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return root


@pytest.fixture
def demo_experiment(_demo_master, tmp_path) -> Path:
    """An experiments dir after the whole demo (extract, steer, infer, replay, compare), a copy."""
    dst = tmp_path / "experiments"
    shutil.copytree(_demo_master, dst)
    return dst


FAKE_KEY = "sk-test-NOT-A-REAL-KEY-5f3c9a1e"


@pytest.fixture(scope="session")
def review_runs(tmp_path_factory, demo_family) -> dict:
    """A small experiments dir with real runs for the review tools (snapshots, diff, runs,
    dashboard): one extraction on base (judge=openai configured, with a fake key in the
    environment, vetting off so nothing is sent) and a steering sweep over instruct, rm_lora."""
    root = tmp_path_factory.mktemp("review") / "experiments"
    env = {"OPENAI_API_KEY": FAKE_KEY}
    run_stage("extract", "max_pairs=8", "method=[mean_diff]", "layers=[10]", "judge=openai",
              "steps=[generate,activations,vectors,evaluate]", "generation.max_new_tokens=4",
              experiments=root, env=env)
    run_stage("steer", "-m", "model_variant=instruct,rm_lora", "layer=10", "coef=4",
              "method=mean_diff", "questions=2", "generation.max_new_tokens=6",
              experiments=root, env=env)
    sweep = next((root / "demo" / "sweeps" / "steer").iterdir())
    return {"root": root, "sweep": sweep, "key": FAKE_KEY}


# Tests run on two xdist workers (README's test command). Tests that share a costly
# session fixture go to one worker, so it is built once; the SLURM tests go to one worker
# too, since they share the one-node cluster's 2 CPUs and time what it does.
_SHARED_FIXTURES = ("_demo_master", "review_runs", "_extracted_master")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
            continue
        shared = [f for f in _SHARED_FIXTURES if f in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))


# --- headless Chromium for the browser tests (Playwright): one browser per module, and a page
# per test that fails the test on any console error or uncaught page error
@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api as playwright_api  # only browser tests need it

    from trait_pipeline.serve import CHROMIUM

    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    pg.close()
    assert errors == [], errors
