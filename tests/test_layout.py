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


def test_discovery(lay):
    lay.responses_dir("c1/t1", "base").mkdir(parents=True)
    lay.responses_dir("c1/t1", "instruct").mkdir(parents=True)
    lay.responses_dir("c2/t2", "base").mkdir(parents=True)
    lay.evaluation_path("base").parent.mkdir(parents=True)  # _evaluation is not a category
    lay.raw_dir("rm_lora", "s").mkdir(parents=True)
    assert lay.traits() == ["c1/t1", "c2/t2"]
    assert lay.variants("extraction") == ["base", "instruct"]
    assert lay.variants("extraction", "c2/t2") == ["base"]
    assert lay.variants("inference") == ["rm_lora"]


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
