"""storage/footprint.py: safetensors sizes from shapes (exact), the printed line, the refusal."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest
import torch

from trait_pipeline.errors import PipelineError
from trait_pipeline.storage import footprint
from trait_pipeline.storage.footprint import Footprint, check_disk, human, safetensors_bytes
from trait_pipeline.vector_store import atomic_save_tensors


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_estimate_is_the_size_of_the_file_written(tmp_path, dtype):
    tensors = {"prompt.residual": torch.zeros(7, 3, 32, dtype=dtype),
               "response.residual": torch.zeros(5, 3, 32, dtype=dtype)}
    meta = {"model": "x/y", "layers": [0, 1, 2], "note": "ünïcode ≈"}
    path = tmp_path / "a.safetensors"
    atomic_save_tensors(path, tensors, meta)
    import json

    est = safetensors_bytes({k: tuple(t.shape) for k, t in tensors.items()}, dtype.itemsize,
                            {k: json.dumps(v) for k, v in meta.items()})
    assert est == path.stat().st_size


def test_human_units():
    assert [human(x) for x in (999, 1_300_000, 70_312_000_000)] == ["999 B", "1.3 MB", "70.3 GB"]


def test_check_disk_prints_and_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 5_000))
    fp = Footprint(70_000_000_000, "raw activations of 150 prompts", "80 layers", tmp_path / "raw")
    with pytest.raises(PipelineError) as err:
        check_disk(fp, hint="capture fewer layers")
    msg = str(err.value)
    assert "\n" not in msg and "70.0 GB" in msg and "5.0 kB" in msg and "disk_check=false" in msg
    assert "disk: raw activations of 150 prompts ≈ 70.0 GB" in capsys.readouterr().out
    check_disk(fp, enabled=False)  # told otherwise: only the line
    assert footprint.free_bytes(tmp_path / "not" / "yet") == 5_000
