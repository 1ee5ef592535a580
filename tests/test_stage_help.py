"""Stage help: what each stage does, every key with default and meaning, variants, examples."""

import re
import subprocess
import sys

import pytest

from trait_pipeline.help.stage_help import STAGES, _markers, docs_in_sync, stage_doc
from trait_pipeline.layout import PROJECT_ROOT


def _help(*argv: str) -> str:
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=False,
                         cwd=PROJECT_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_help_explains_the_stage(stage):
    text = _help("-m", f"trait_pipeline.{stage}", "--help")
    doc = stage_doc(stage)
    assert text.startswith(f"trait-pipeline {stage} — {doc.summary}")
    assert "${" not in text and "oc.select" not in text
    assert len(doc.examples) >= 3
    assert len(re.findall(rf"^  trait-pipeline {stage}\b", text, re.MULTILINE)) >= 3
    for kd in doc.keys:
        assert kd.meaning, f"{stage}: key {kd.key} has no comment in conf/{stage}.yaml"
        assert re.search(rf"^  {re.escape(kd.key)}\s+\S+.*{re.escape(kd.meaning[:20])}", text, re.MULTILINE), kd.key
    # the experiment's variants, with the models they load, and what the aliases mean
    assert re.search(r"^  rm_lora\s+demo:instruct \+ LoRA demo:rm_lora", text, re.MULTILINE)
    assert "extraction = base, application = instruct" in text
    assert f"docs: docs/{stage}.md" in text or "docs: README.md" in text


def test_extract_help_has_layers_not_layer():
    text = _help("-m", "trait_pipeline.extract", "--help")
    assert re.search(r"^  layers\s+all\s", text, re.MULTILINE)
    assert not re.search(r"^  layer\s", text, re.MULTILINE)


def test_front_door_help_is_the_same_and_follows_the_line():
    assert _help("-m", "trait_pipeline", "steer", "--help") == _help("-m", "trait_pipeline.steer", "--help")
    text = _help("-m", "trait_pipeline.steer", "experiment=rm_syco", "--help")
    assert "meta-llama/Llama-3.3-70B-Instruct" in text and "model variants of experiment 'rm_syco'" in text


def test_hydra_help_still_reachable():
    assert "Hydra" in _help("-m", "trait_pipeline.steer", "--hydra-help")


@pytest.mark.parametrize("stage", STAGES)
def test_docs_key_tables_are_generated_from_the_yaml(stage):
    files = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
    states = {f.name: docs_in_sync(f, stage) for f in files}
    assert False not in states.values(), f"run python -m trait_pipeline.help --write-docs: {states}"
    if stage != "compare":
        assert any(s is True for s in states.values())
    assert _markers(stage)[0].startswith("<!-- keys:")
