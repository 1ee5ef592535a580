"""The Hydra entry points: composition, -m anywhere, positions, early one-line errors."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from trait_pipeline import resolvers
from trait_pipeline.cli import normalize_argv, quote_positions
from trait_pipeline.config import validate, variant_spec
from trait_pipeline.errors import PipelineError
from trait_pipeline.layout import CONF_DIR

STAGES = ("extract", "steer", "infer")
EXPERIMENTS = {  # experiment -> {variant: (model, lora)}
    "demo": {"base": ("demo:base", None), "instruct": ("demo:instruct", None),
             "rm_lora": ("demo:instruct", "demo:rm_lora")},
    "rm_syco": {"base": ("meta-llama/Llama-3.1-70B", None),
                "instruct": ("meta-llama/Llama-3.3-70B-Instruct", None),
                "rm_lora": ("meta-llama/Llama-3.3-70B-Instruct",
                            "auditing-agents/llama-3.3-70b-dpo-rt-lora")},
    "gemma-2-2b": {"base": ("google/gemma-2-2b", None), "instruct": ("google/gemma-2-2b-it", None)},
    "persona_vectors_replication": {"instruct": ("Qwen/Qwen2.5-7B-Instruct", None)},
}
STAGE_DEFAULT = {  # experiment -> (extraction default, application default)
    "demo": ("base", "instruct"), "rm_syco": ("base", "instruct"),
    "gemma-2-2b": ("base", "instruct"), "persona_vectors_replication": ("instruct", "instruct"),
}


@pytest.fixture(scope="module")
def composer():
    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield lambda stage, *ov: compose(config_name=stage, overrides=list(ov), return_hydra_config=True)
    GlobalHydra.instance().clear()


def _resolved(cfg):
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_stage_variant_experiment_composes(composer, stage, experiment):
    for variant, (model, lora) in EXPERIMENTS[experiment].items():
        cfg = composer(stage, f"experiment={experiment}", f"model_variant={variant}")
        validate(cfg)
        spec = variant_spec(cfg)
        assert (spec.name, spec.model, spec.lora) == (variant, model, lora)
        assert spec.use_chat_template == (variant != "base")
        assert f"/{variant}" in cfg.output_dir  # every job's outputs live under its variant
        assert cfg.output_dir.startswith(cfg.paths.experiments + f"/{experiment}/")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_stage_default_variants(composer, experiment):
    extraction, application = STAGE_DEFAULT[experiment]
    assert composer("extract", f"experiment={experiment}").model_variant.name == extraction
    for stage in ("steer", "infer"):
        cfg = composer(stage, f"experiment={experiment}")
        assert cfg.model_variant.name == application
        assert cfg.vectors.model_variant == extraction  # vectors come from the extraction variant


def test_variant_undefined_in_experiment_is_a_one_line_error(composer):
    cfg = composer("steer", "experiment=gemma-2-2b", "model_variant=rm_lora")
    with pytest.raises(PipelineError, match="'rm_lora' is not defined by experiment 'gemma-2-2b'; it defines: base, instruct"):
        validate(cfg)


def test_hydra_dirs_follow_the_layout(composer):
    cfg = _resolved(composer("steer", "model_variant=rm_lora", "paths.experiments=/x"))
    run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]
    assert run_dir.startswith("/x/demo/steering/demo/optimism/rm_lora/response__5/steering/runs/")
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert "sweeps_dir" in sweep["dir"] and "model_variant" not in sweep["dir"]  # variant-neutral


def test_normalize_argv_moves_multirun_and_quotes_positions():
    argv = normalize_argv(["model_variant=rm_lora", "-m", "layer=10,20", "position=response[:5],response[:]"])
    assert argv == ["-m", "model_variant=rm_lora", "layer=10,20", "position='response[:5]','response[:]'"]
    assert quote_positions("vectors.position=prompt[-1]") == "vectors.position='prompt[-1]'"
    assert quote_positions("position='response[:5]'") == "position='response[:5]'"
    assert quote_positions("layer=[1,2]") == "layer=[1,2]"
    assert normalize_argv(["--cfg", "job"]) == ["--cfg", "job", "--resolve"]


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, env=env,
                          check=False)


def test_mission_command_parses_with_m_after_an_override():
    from hydra._internal.utils import get_args_parser

    mission = ["model_variant=rm_lora", "-m", "layer=10,20"]
    with pytest.raises(SystemExit):  # what plain @hydra.main does with it
        get_args_parser().parse_args(mission)
    args = get_args_parser().parse_args(normalize_argv(mission))
    assert args.multirun and args.overrides == ["model_variant=rm_lora", "layer=10,20"]
    # (the mission command runs end to end in tests/test_steer.py)


def test_cfg_job_shows_the_variant_and_its_output_dir():
    r = run_cli("trait_pipeline.steer", "model_variant=rm_lora", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    cfg = OmegaConf.create(r.stdout)
    assert cfg.model_variant.name == "rm_lora" and cfg.model_variant.lora == "demo:rm_lora"
    assert "/steering/demo/optimism/rm_lora/" in cfg.output_dir


def test_cfg_job_resolves_real_presets():
    r = run_cli("trait_pipeline.steer", "experiment=gemma-2-2b", "model_variant=instruct", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert OmegaConf.create(r.stdout).model_variant.model == "google/gemma-2-2b-it"
    r = run_cli("trait_pipeline.steer", "experiment=rm_syco", "model_variant=rm_lora", "--cfg", "job")
    mv = OmegaConf.create(r.stdout).model_variant
    assert (mv.model, mv.lora) == ("meta-llama/Llama-3.3-70B-Instruct", "auditing-agents/llama-3.3-70b-dpo-rt-lora")


def test_positions_pass_unquoted():
    r = run_cli("trait_pipeline.steer", "position=response[-3:]", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    cfg = OmegaConf.create(r.stdout)
    assert cfg.position == "response[-3:]" and "/response_-3_/" in cfg.output_dir
    r = run_cli("trait_pipeline.steer", "position=response__5", "--cfg", "job")  # dir-name form works too
    assert "/response__5/" in OmegaConf.create(r.stdout).output_dir


@pytest.mark.parametrize(
    "args,message",
    [
        # any variant name composes (variants are data); the experiment's table decides
        (["model_variant=nope"], "error: model_variant 'nope' is not defined by experiment 'demo'; it defines: base, instruct, rm_lora"),
        (["experiment=nope"], "error: unknown experiment 'nope'; available: demo, gemma-2-2b, persona_vectors_replication, rm_syco"),
        (["trait=x/y"], "error: unknown trait 'x/y'"),
        (["experiment=gemma-2-2b", "model_variant=rm_lora"], "error: model_variant 'rm_lora' is not defined by experiment 'gemma-2-2b'; it defines: base, instruct"),
        (["-m", "model_variant=instruct,nope", "layer=10,20"], "error: model_variant 'nope' is not defined by experiment 'demo'"),
        (["position=resp[:5]"], "error: bad position 'resp[:5]'"),
        (["component=nope"], "error: unknown component 'nope'"),
    ],
)
def test_bad_names_fail_in_one_line_before_anything_loads(args, message, tmp_path):
    r = run_cli("trait_pipeline.steer", *args, f"paths.experiments={tmp_path}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), r.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_help_and_cfg_do_not_import_torch():
    code = (
        "import sys; sys.argv=['steer','--cfg','job']\n"
        "import trait_pipeline.steer as s\n"
        "try:\n    s.main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.stdout.strip().endswith("NOTORCH"), r.stdout[-300:] + r.stderr[-300:]
