"""A real install, as on a cluster: build the sdist and the wheel, install the wheel (not
editable) into a fresh venv, and use it from directories that are not the repository.

The venv sees the system's third-party packages (torch, transformers, hydra ...) through one
path line in a ``.pth`` file, not through ``--system-site-packages``: that way the ``.pth`` files
of the system site-packages, which hold the editable install of this checkout, are never run,
and the test checks that ``trait_pipeline`` and ``hydra_plugins`` come from the venv only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # two builds, a venv, a dozen CLI starts, one small extract
STAGES_CFG = {  # every Hydra stage, with what it needs to compose
    "extract": [], "steer": [], "infer": [], "compare": ["model_variants=[instruct,rm_lora]"],
}
OTHER_COMMANDS = ("migrate", "serve", "status", "demo")  # argparse commands: --help
SMALL_EXTRACT = ["max_pairs=8", "layers=[10]", "method=[mean_diff]",
                 "steps=[generate,activations,vectors]", "generation.max_new_tokens=6"]


def _source_files() -> list[str]:
    """What a clone of this commit holds (tracked + new, not ignored), as ``pip install git+...`` sees."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell which files a clone would hold")
    return [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]


def _build(backend_call: str, cwd: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    code = f"from setuptools import build_meta as b; print(b.{backend_call}({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env=_clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / proc.stdout.strip().splitlines()[-1]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything pointing at this checkout or its outputs."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("TRAIT_PIPELINE_")}
    env.update(HYDRA_FULL_ERROR="0", TQDM_DISABLE="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


class Installed:
    def __init__(self, root: Path, wheel: Path, venv: Path) -> None:
        self.root, self.wheel, self.venv = root, wheel, venv
        self.python = venv / "bin" / "python"
        self.script = venv / "bin" / "trait-pipeline"
        self.xdg = root / "xdg-cache"  # where an installed wheel's default cache must land

    def run(self, *args: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False,
                              env=_clean_env(XDG_CACHE_HOME=str(self.xdg), **env))

    def cli(self, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
        return self.run(self.script, *args, cwd=cwd, **env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    clone = root / "clone"
    for rel in _source_files():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, clone / rel)
    sdist = _build("build_sdist", clone, root / "dist")  # the sdist must carry conf/ and datasets/
    with tarfile.open(sdist) as tar:
        tar.extractall(root / "sdist", filter="data")
    unpacked = next((root / "sdist").iterdir())
    wheel = _build("build_wheel", unpacked, root / "dist")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    # the system's packages as a plain path entry: their own .pth files (the editable install
    # of this checkout among them) are not processed
    Path(purelib, "_system_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps",
                           "--no-index", "--ignore-installed", "--quiet", str(wheel)],
                          capture_output=True, text=True, timeout=300, check=False, env=_clean_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return Installed(root, wheel, venv)


@pytest.fixture
def empty_dir(tmp_path) -> Path:
    d = tmp_path / "somewhere"
    d.mkdir()
    return d


def test_the_wheel_carries_conf_and_datasets(installed):
    # machine-specific configs (conf/local/*.yaml, conf/hydra/launcher/site/) are git-ignored,
    # so never among these, and setup.py leaves them out even when the builder has some
    tracked = {f for f in _source_files() if f.startswith(("conf/", "datasets/"))}
    prefix = "trait_pipeline/_shipped/"
    with zipfile.ZipFile(installed.wheel) as zf:
        names = zf.namelist()
    shipped = {n[len(prefix):] for n in names if n.startswith(prefix)}
    assert shipped == tracked
    assert any(n.startswith("trait_pipeline/dashboard/") and n.endswith(".html") for n in names)
    assert any(n.startswith("hydra_plugins/trait_pipeline_config/") for n in names)


def test_the_venv_imports_the_wheel_not_the_checkout(installed, empty_dir):
    code = ("import json, trait_pipeline, hydra_plugins, trait_pipeline.layout as l; "
            "print(json.dumps([trait_pipeline.__file__, list(hydra_plugins.__path__), str(l.CONF_DIR), "
            "str(l.DATASETS_DIR), l.IS_INSTALLED_WHEEL]))")
    r = installed.run(installed.python, "-c", code, cwd=empty_dir)
    assert r.returncode == 0, r.stderr
    init, plugin_paths, conf, datasets, is_wheel = json.loads(r.stdout)
    venv = str(installed.venv.resolve())
    assert init.startswith(venv) and is_wheel
    assert plugin_paths and all(p.startswith(venv) for p in plugin_paths)
    assert conf.startswith(venv) and conf.endswith("_shipped/conf")
    assert datasets.startswith(venv) and datasets.endswith("_shipped/datasets")


def test_help_lists_every_command(installed, empty_dir):
    for argv in ([installed.script, "--help"], [installed.python, "-m", "trait_pipeline", "--help"]):
        r = installed.run(*argv, cwd=empty_dir)
        assert r.returncode == 0, r.stderr
        for name in (*STAGES_CFG, *OTHER_COMMANDS):
            assert f"\n  {name} " in r.stdout, (name, r.stdout)


def test_every_stage_composes_from_an_empty_directory(installed, empty_dir):
    for stage, extra in STAGES_CFG.items():
        r = installed.cli(stage, *extra, "--cfg", "job", cwd=empty_dir)
        assert r.returncode == 0, (stage, r.stderr[-2000:])
        cfg = OmegaConf.create(r.stdout)
        assert cfg.output_dir.startswith(str(empty_dir.resolve() / "experiments" / "demo")), cfg.output_dir
        # an installed wheel caches per user, never inside site-packages
        assert cfg.paths.cache == str(installed.xdg / "trait-pipeline")
    r = installed.run(installed.python, "-m", "trait_pipeline.extract", "--cfg", "job", cwd=empty_dir)
    assert r.returncode == 0 and OmegaConf.create(r.stdout).model_variant.model == "demo:base"
    for name in OTHER_COMMANDS:
        r = installed.cli(name, "--help", cwd=empty_dir)
        assert r.returncode == 0 and "usage" in r.stdout.lower(), (name, r.stderr[-2000:])
    r = installed.cli("steer", "--info", "searchpath", cwd=empty_dir)
    assert r.returncode == 0 and "_shipped/conf" in r.stdout
    assert not any(empty_dir.iterdir())  # composing writes nothing


def _user_project(root: Path) -> Path:
    """A project dir with a new experiment, a new variant name, a new trait, prompt set and judge."""
    conf = root / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\n"
        "experiment: mine\n"
        "variants:\n"
        "  base: {model: 'demo:base', use_chat_template: false}\n"
        "  tuned: {model: 'demo:instruct', lora: 'demo:rm_lora'}   # a new name, no variant file\n"
        "stage_defaults: {extraction: base, application: tuned}\n"
        "dtype: float32\n"
        "trait: mine/hope\n"
        "layer: 10\n")
    (conf / "judge").mkdir()
    (conf / "judge" / "lexicon_strict.yaml").write_text(
        (REPO / "conf/judge/offline.yaml").read_text())
    trait = root / "datasets" / "traits" / "mine" / "hope"
    shutil.copytree(REPO / "datasets/traits/demo/optimism", trait)
    (root / "datasets" / "inference").mkdir(parents=True)
    (root / "datasets" / "inference" / "my_prompts.json").write_text(
        json.dumps({"prompts": [{"id": 1, "text": "Tell me about tomorrow."}]}))
    return root


def test_a_user_project_adds_experiment_variant_trait_and_judge(installed, tmp_path, demo_family):
    project = _user_project(tmp_path / "proj")
    r = installed.cli("steer", "experiment=mine", "judge=lexicon_strict", "--cfg", "job", cwd=project)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = OmegaConf.create(r.stdout)
    assert (cfg.model_variant.name, cfg.model_variant.model, cfg.model_variant.lora) == (
        "tuned", "demo:instruct", "demo:rm_lora")
    assert cfg.trait == "mine/hope" and cfg.vectors.model_variant == "base"
    assert cfg.output_dir == str(project.resolve() / "experiments/mine/steering/mine/hope/tuned/response__5/steering")
    r = installed.cli("infer", "experiment=mine", "prompt_set=my_prompts", "--cfg", "job", cwd=project)
    assert r.returncode == 0, r.stderr[-2000:]
    # where each config comes from: the project's conf/ first, then the shipped one
    r = installed.cli("steer", "--info", "searchpath", cwd=project)
    lines = r.stdout.splitlines()
    mine = next(i for i, line in enumerate(lines) if f"file://{project.resolve()}/conf" in line)
    shipped = next(i for i, line in enumerate(lines) if "_shipped/conf" in line)
    assert mine < shipped
    # unknown names still fail in one line, naming what exists
    r = installed.cli("steer", "experiment=mine", "model_variant=nope", cwd=project)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: model_variant 'nope' is not defined by experiment 'mine'; it defines: base, tuned")
    # a real step on the demo model family, from an empty directory elsewhere, the project named
    # by the environment; nothing lands in the venv
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = installed.cli("extract", "experiment=mine", *SMALL_EXTRACT, cwd=elsewhere, timeout=900,
                      TRAIT_PIPELINE_PROJECT=str(project),
                      TRAIT_PIPELINE_CACHE=str(demo_family.root.parent.parent))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (project / "experiments/mine/extraction/mine/hope/base/vectors/response__5/residual/"
            "mean_diff/layer10.safetensors").is_file()
    assert not any(elsewhere.iterdir())
    site = installed.venv / "lib"
    assert not [p for p in site.rglob("*") if p.name in ("experiments", ".cache", "demo_family")]
