"""Where configs and datasets come from: the user's dirs before the shipped ones, and variants
as data (``hydra_plugins/trait_pipeline_config``, ``trait_pipeline/layout.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from trait_pipeline import layout
from trait_pipeline.config import validate
from trait_pipeline.errors import PipelineError
from trait_pipeline.layout import CONF_DIR, DATASETS_DIR, PROJECT_ROOT
from trait_pipeline.prompt_sets import load_prompt_set
from trait_pipeline.resolvers import register

PRESET = """# @package _global_
experiment: mine
variants:
  base: {model: 'demo:base', use_chat_template: false}
  cmp:  {model: 'org/other-model', dtype: bfloat16}
stage_defaults: {extraction: base, application: cmp}
dtype: float32
trait: demo/optimism
layer: 3
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    for var in (layout.PROJECT_ENV, layout.CONFIG_PATH_ENV, layout.EXPERIMENTS_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    register()
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def _compose(stage: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=stage, overrides=list(overrides))


def _search_path() -> list[tuple[str, str]]:
    from hydra._internal.utils import create_config_search_path

    return [(e.provider, e.path) for e in create_config_search_path(f"file://{CONF_DIR}").get_path()]


def _conf(root: Path, rel: str, text: str) -> Path:
    path = root / "conf" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_preset_in_the_project_conf_is_found(tmp_path):
    _conf(tmp_path, "experiment/mine.yaml", PRESET)
    cfg = _compose("steer", "experiment=mine")
    assert cfg.experiment == "mine" and cfg.layer == 3
    mv = OmegaConf.to_container(cfg.model_variant, resolve=True)
    assert mv == {"name": "cmp", "model": "org/other-model", "lora": None, "use_chat_template": True,
                  "dtype": "bfloat16", "revision": None}
    providers = [p for p, _ in _search_path()]
    assert providers.index("trait-pipeline project") < providers.index("main") < providers.index(
        "trait-pipeline variants")


def test_a_project_preset_shadows_the_shipped_one_of_the_same_name(tmp_path):
    _conf(tmp_path, "experiment/demo.yaml",
          (CONF_DIR / "experiment/demo.yaml").read_text().replace("layer: 10", "layer: 7"))
    assert _compose("steer").layer == 7
    assert _compose("steer", "experiment=gemma-2-2b").experiment == "gemma-2-2b"  # shipped, still there


def test_config_path_env_comes_first_then_the_project(tmp_path, monkeypatch):
    lab = tmp_path / "lab"
    _conf(lab, "experiment/mine.yaml", PRESET.replace("layer: 3", "layer: 5"))
    project = tmp_path / "proj"
    _conf(project, "experiment/mine.yaml", PRESET)
    monkeypatch.setenv(layout.CONFIG_PATH_ENV, str(lab / "conf"))
    monkeypatch.setenv(layout.PROJECT_ENV, str(project))
    assert layout.user_config_dirs() == [(lab / "conf").resolve(), (project / "conf").resolve()]
    assert _compose("steer", "experiment=mine").layer == 5
    assert _compose("steer", "experiment=mine").paths.experiments == str(project.resolve() / "experiments")


def test_a_clone_run_from_its_root_lists_its_conf_once(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    assert layout.user_config_dirs() == []
    assert [p for p, _ in _search_path()].count("main") == 1


def test_other_hydra_apps_are_left_alone(tmp_path):
    from hydra._internal.utils import create_config_search_path

    _conf(tmp_path, "experiment/mine.yaml", PRESET)
    other = tmp_path / "other_app_conf"
    other.mkdir()
    found = [(e.provider, e.path) for e in create_config_search_path(f"file://{other}").get_path()]
    assert ("main", f"file://{other}") in found
    assert not [p for p, _ in found if p.startswith("trait-pipeline")]


def test_any_variant_name_is_data_and_undefined_ones_fail_naming_the_defined(tmp_path):
    _conf(tmp_path, "experiment/mine.yaml", PRESET)
    cfg = _compose("infer", "experiment=mine", "model_variant=base")
    assert (cfg.model_variant.name, cfg.model_variant.use_chat_template) == ("base", False)
    cfg = _compose("infer", "experiment=mine", "model_variant=nope")
    with pytest.raises(PipelineError, match=r"^model_variant 'nope' is not defined by experiment "
                                            r"'mine'; it defines: base, cmp$"):
        validate(cfg)


def test_a_variant_file_still_wins_over_the_table(tmp_path):
    _conf(tmp_path, "model_variant/cmp.yaml",
          "name: cmp\nmodel: ${variants.cmp.model}\nlora: null\nuse_chat_template: false\n"
          "dtype: float16\nrevision: main\n")
    _conf(tmp_path, "experiment/mine.yaml", PRESET)
    mv = _compose("steer", "experiment=mine", "model_variant=cmp").model_variant
    assert (mv.model, mv.dtype, mv.revision, mv.use_chat_template) == (
        "org/other-model", "float16", "main", False)


def test_variant_names_are_listed_for_help_and_completion(tmp_path):
    from hydra_plugins.trait_pipeline_config import variant_names

    _conf(tmp_path, "experiment/mine.yaml", PRESET)
    assert {"base", "instruct", "rm_lora", "cmp"} <= set(variant_names())


def test_user_datasets_come_first_and_shipped_ones_stay(tmp_path):
    mine = tmp_path / "datasets"
    (mine / "inference").mkdir(parents=True)
    (mine / "inference" / "demo.json").write_text(json.dumps([{"id": "a", "text": "only mine"}]))
    assert [p.text for p in load_prompt_set("demo", mine).prompts] == ["only mine"]
    assert load_prompt_set("general_questions", mine).path.parent == DATASETS_DIR / "inference"
    trait = mine / "traits" / "demo" / "optimism"
    trait.mkdir(parents=True)
    assert layout.trait_data_dir("demo/optimism", mine) == trait
    assert layout.trait_data_dir("behavior/sycophancy", mine) == DATASETS_DIR / "traits/behavior/sycophancy"
    assert layout.trait_data_dir("demo/optimism") == trait  # default root: <project>/datasets
    assert layout.dataset_roots() == [tmp_path.resolve() / "datasets", DATASETS_DIR]


def test_an_installed_wheel_caches_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv(layout.CACHE_ENV, raising=False)
    assert layout.default_cache_dir() == PROJECT_ROOT / ".cache"  # a clone: as before
    monkeypatch.setattr(layout, "IS_INSTALLED_WHEEL", True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert layout.default_cache_dir() == tmp_path / "xdg" / "trait-pipeline"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert layout.default_cache_dir() == Path.home() / ".cache" / "trait-pipeline"
    monkeypatch.setenv(layout.CACHE_ENV, str(tmp_path / "c"))
    assert layout.default_cache_dir() == tmp_path / "c"


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "HYDRA_FULL_ERROR": "0", **env}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env=full)


def test_config_dir_flag_and_hydra_searchpath_reach_the_early_checks(tmp_path):
    lab = tmp_path / "lab"
    _conf(lab, "experiment/mine.yaml", PRESET)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for how in (["-cd", str(lab / "conf")], [f"--config-dir={lab / 'conf'}"],
                [f"hydra.searchpath=[file://{lab / 'conf'}]"]):
        r = _cli("trait_pipeline.steer", *how, "experiment=mine", "--cfg", "job", cwd=elsewhere)
        assert r.returncode == 0, (how, r.stderr)
        assert OmegaConf.create(r.stdout).model_variant.model == "org/other-model"
    r = _cli("trait_pipeline.steer", "-cd", str(tmp_path / "typo"), "--cfg", "job", cwd=elsewhere)
    assert r.returncode == 2 and r.stderr.startswith(f"error: config dir {tmp_path / 'typo'} does not exist")
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli("trait_pipeline.steer", "--cfg", "job", cwd=elsewhere,
             TRAIT_PIPELINE_PROJECT=str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: $TRAIT_PIPELINE_PROJECT='{tmp_path / 'nope'}' is not a directory; "
        "expected your project dir (holding conf/, datasets/, experiments/)")
