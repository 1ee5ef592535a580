"""trait_pipeline.safety.files: modes that follow the umask, writability checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from trait_pipeline.errors import PipelineError
from trait_pipeline.jsonio import write_json
from trait_pipeline.judges.cache import JudgeCache
from trait_pipeline.safety.files import apply_umask, check_writable, current_umask
from trait_pipeline.vector_store import save_vector


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writers_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        write_json(tmp_path / "a" / "r.json", {"x": 1})
        save_vector(tmp_path / "v" / "layer1.safetensors", torch.ones(3), {"layer": 1})
        JudgeCache(tmp_path / "cache").put("ab" * 32, {"score": 1.0})
        d = Path(__import__("tempfile").mkdtemp(dir=tmp_path))  # what demo_family builds into
        apply_umask(d, is_dir=True)
    finally:
        os.umask(old)
    files = [tmp_path / "a" / "r.json", tmp_path / "v" / "layer1.safetensors",
             *(tmp_path / "cache").rglob("*.json")]
    assert len(files) == 3
    for f in files:
        assert _mode(f) == 0o666 & ~umask, (f, oct(_mode(f)))
    assert _mode(d) == 0o777 & ~umask


def test_check_writable_names_the_problem(tmp_path):
    check_writable(tmp_path / "new" / "deeper")  # creatable: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(PipelineError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "sub")
