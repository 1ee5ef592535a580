"""The dashboard's review features in headless Chromium, on real runs: a run's resolved
config, the diff of two selected runs, the config behind a steering run and an extraction,
and variant pickers that say which model and adapter each variant loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from trait_pipeline.serve import CHROMIUM, running

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM}", allow_module_level=True)


@pytest.fixture(scope="module")
def page(review_runs):
    with running(review_runs["root"]) as url, playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.base_url = url
        yield pg
        browser.close()
        assert errors == [], errors


def settle(page):
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=60_000)
    assert page.evaluate("document.body.dataset.error || null") is None
    return page


def test_two_runs_diff_and_a_runs_config(page):
    page.goto(f"{page.base_url}/?exp=demo&view=runs")
    settle(page)
    rows = page.locator("#runs-table tr[data-run]")
    assert rows.count() == 3
    page.locator('#runs-table tr[data-run*="/instruct/"] input[name="runs-a"]').click()
    settle(page)
    page.locator('#runs-table tr[data-run*="/rm_lora/"] input[name="runs-b"]').click()
    settle(page)
    diff = page.text_content("#runs-diff")
    assert "-model_variant.lora: null" in diff and "+model_variant.lora: demo:rm_lora" in diff
    assert page.locator("#runs-diff span.add").count() >= 2  # coloured by sign
    config = page.text_content("#runs-config")  # the run picked last (B)
    assert "lora: demo:rm_lora" in config and "provenance:" in config and "${" not in config
    # a click on the extraction row shows its config instead
    page.locator('#runs-table tr[data-run^="extraction/"] td').nth(4).click()
    settle(page)
    assert "stage: extract" in page.text_content("#runs-config")


def test_steering_run_and_extraction_show_their_config(page):
    page.goto(f"{page.base_url}/?exp=demo&view=steering&variant=rm_lora")
    settle(page)
    text = page.text_content("#steer-config-text")
    assert "stage: steer" in text and "lora: demo:rm_lora" in text
    assert "/rm_lora/" in page.text_content("#steer-config-run")
    page.goto(f"{page.base_url}/?exp=demo&view=extraction&variant=base")
    settle(page)
    assert "stage: extract" in page.text_content("#ext-config-text")


def test_variant_pickers_name_model_and_adapter(page):
    page.goto(f"{page.base_url}/?exp=demo&view=steering&variant=instruct")
    settle(page)
    labels = page.eval_on_selector_all("#variant option", "els => els.map(e => e.textContent)")
    assert "rm_lora — demo:instruct + demo:rm_lora" in labels
    assert "instruct — demo:instruct" in labels
