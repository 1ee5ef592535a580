from pathlib import Path

import pytest

from trait_pipeline.layout import Layout, LayoutError, parse_position_dir


@pytest.fixture
def lay(tmp_path):
    return Layout(tmp_path, "rm_syco")


def rel(lay, p):
    return p.relative_to(lay.experiments).as_posix()


def test_extraction_tree_follows_the_seed(lay):
    t, v = "rm_hack/ulterior_motive", "base"
    assert rel(lay, lay.responses_dir(t, v)) == "rm_syco/extraction/rm_hack/ulterior_motive/base/responses"
    assert rel(lay, lay.activations_dir(t, v, "response[:5]", "residual")) == (
        "rm_syco/extraction/rm_hack/ulterior_motive/base/activations/response__5/residual"
    )
    assert rel(lay, lay.vectors_dir(t, v, "response[:]", "attn_out", "probe")) == (
        "rm_syco/extraction/rm_hack/ulterior_motive/base/vectors/response_all/attn_out/probe"
    )


def test_steering_tree_follows_the_seed(lay):
    d = lay.steering_dir("a/b", "rm_lora", "response[:5]", "steering")
    assert rel(lay, d) == "rm_syco/steering/a/b/rm_lora/response__5/steering"
    assert lay.results_path("a/b", "rm_lora", "response[:5]", "steering") == d / "results.json"
    assert rel(lay, lay.baseline_path("a/b", "rm_lora", "response[:5]", "steering")).endswith(
        "steering/responses/baseline.json"
    )
    run = lay.run_responses_path("a/b", "rm_lora", "response[:5]", "steering", "residual", 10, 4.0, "T")
    assert run.name == "L10_c4_T.json" and run.parent.name == "residual"


def test_inference_tree_follows_the_seed(lay):
    assert rel(lay, lay.raw_dir("rm_lora", "set1")) == "rm_syco/inference/rm_lora/raw/set1"
    assert rel(lay, lay.inference_responses_dir("rm_lora", "set1")) == "rm_syco/inference/rm_lora/responses/set1"
    assert rel(lay, lay.projections_dir("rm_lora", "a/b", "set1")) == (
        "rm_syco/inference/rm_lora/projections/a/b/set1"
    )


def test_position_dirs_round_trip_through_the_layout(lay):
    d = lay.vectors_dir("a/b", "base", "response[-5:]", "residual", "probe")
    assert parse_position_dir(d.parent.parent.name) == "response[-5:]"


@pytest.mark.parametrize("bad", ["../etc", "a", "a/b/c", "/abs/x", "a/..", "", "a/ b"])
def test_bad_traits_never_become_paths(lay, bad):
    with pytest.raises(LayoutError, match="bad trait"):
        lay.extraction_dir(bad, "base")


@pytest.mark.parametrize("bad", ["..", "", "a/b", ".hidden"])
def test_bad_names_never_become_paths(lay, bad):
    with pytest.raises(LayoutError):
        lay.inference_dir(bad)
    with pytest.raises(LayoutError):
        Layout(Path("x"), bad)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")


def test_discovery(lay):
    _touch(lay.responses_dir("c1/t1", "base") / "pos.json")
    _touch(lay.responses_dir("c1/t1", "instruct") / "pos.json")
    _touch(lay.responses_dir("c2/t2", "base") / "pos.json")
    lay.evaluation_path("base").parent.mkdir(parents=True)  # _evaluation is not a category
    _touch(lay.raw_path("rm_lora", "s", 1))
    assert lay.traits() == ["c1/t1", "c2/t2"]
    assert lay.variants("extraction") == ["base", "instruct"]
    assert lay.variants("extraction", "c2/t2") == ["base"]
    assert lay.variants("inference") == ["rm_lora"]


def test_folders_holding_only_failed_runs_are_not_data(tmp_path):
    """A failed job leaves ``runs/<id>/`` (its config snapshot and log) and maybe a lock:
    neither its variant, its trait nor its experiment is listed as having data."""
    from trait_pipeline.layout import experiments, has_data

    lay = Layout(tmp_path, "rm_syco")
    failed = lay.steering_dir("behavior/sycophancy", "instruct", "response[:5]", "steering")
    _touch(failed / "runs" / "2026-01-01_00-00-00_abcd" / ".hydra" / "config.yaml")
    _touch(failed / "runs" / "2026-01-01_00-00-00_abcd" / "run.json")
    _touch(lay.extraction_dir("behavior/sycophancy", "base") / "runs" / "x" / "extract.log")
    (lay.extraction_dir("behavior/sycophancy", "base") / ".responses.lock").touch()
    _touch(lay.inference_dir("rm_lora") / "runs" / "x" / "run.json")
    assert not has_data(failed)
    assert lay.variants("steering") == [] and lay.traits("steering") == []
    assert lay.variants("extraction") == [] and lay.variants("inference") == []
    assert experiments(tmp_path) == []
    _touch(failed / "results.json")  # a real result makes all of them appear
    assert lay.variants("steering") == ["instruct"]
    assert experiments(tmp_path) == ["rm_syco"]


def test_experiments_folder_ships_only_its_readme():
    """A fresh clone has experiments/README.md; everything the stages write there is ignored."""
    import shutil
    import subprocess

    from trait_pipeline.layout import PROJECT_ROOT

    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    readme = PROJECT_ROOT / "experiments" / "README.md"
    assert readme.is_file() and "TRAIT_PIPELINE_EXPERIMENTS" in readme.read_text()

    def ignored(rel: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", rel], cwd=PROJECT_ROOT,
                              check=False, timeout=30).returncode == 0

    assert not ignored("experiments/README.md")
    for rel in ("experiments/demo/extraction/demo/optimism/base/vectors/x.safetensors",
                "experiments/other.json", "trait_pipeline/_shipped/conf/x.yaml", "build/lib/x.py"):
        assert ignored(rel), rel
