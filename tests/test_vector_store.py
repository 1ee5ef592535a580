"""Vectors and tensors on disk: safetensors with JSON provenance, atomic, never pickles."""

import pytest
import torch

from trait_pipeline.errors import PipelineError
from trait_pipeline.vector_store import (
    PROVENANCE_KEYS,
    atomic_save_tensors,
    dataset_hash,
    load_tensors,
    load_vector,
    read_metadata,
    save_vector,
)


def test_vector_round_trip_keeps_values_and_provenance(tmp_path):
    v = torch.randn(64)
    prov = {k: None for k in PROVENANCE_KEYS if k != "layer_convention"} | {"layer": 10, "method": "probe", "position": "response[:5]"}
    path = tmp_path / "vectors" / "layer10.safetensors"
    save_vector(path, v, prov)
    back, meta = load_vector(path)
    assert torch.equal(back, v.float())
    assert meta["layer"] == 10 and meta["position"] == "response[:5]" and "hidden_states" in meta["layer_convention"]
    assert set(PROVENANCE_KEYS) <= set(meta)
    assert path.read_bytes()[:8] != b"\x80\x02\x8a\nl\xfc\x9cF"  # not a torch pickle
    assert read_metadata(path)["method"] == "probe"


def test_tensors_round_trip_and_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "train.safetensors"
    atomic_save_tensors(path, {"pos": torch.ones(2, 3, 4), "neg": torch.zeros(2, 3, 4)}, {"n": 2})
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - safetensors refuses shared/non-contiguous storage
        t = torch.ones(4, 4)
        atomic_save_tensors(path, {"a": t, "b": t}, {"n": 3})
    assert path.read_bytes() == before and not list(tmp_path.glob(".*tmp"))
    tensors, meta = load_tensors(path)
    assert tensors["pos"].shape == (2, 3, 4) and meta["n"] == 2


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="missing file"):
        load_vector(tmp_path / "nope.safetensors")
    atomic_save_tensors(tmp_path / "x.safetensors", {"other": torch.ones(3)}, {})
    with pytest.raises(PipelineError, match="holds no 'vector' tensor"):
        load_vector(tmp_path / "x.safetensors")
    with pytest.raises(PipelineError, match="must be 1-D"):
        save_vector(tmp_path / "y.safetensors", torch.ones(2, 2), {})
    assert not (tmp_path / "y.safetensors").exists()


def test_dataset_hash_is_order_and_content_sensitive():
    assert dataset_hash(["a", "b"]) == dataset_hash(["a", "b"])
    assert dataset_hash(["a", "b"]) != dataset_hash(["b", "a"])
    assert dataset_hash(["ab"]) != dataset_hash(["a", "b"])
