"""Atomic JSON writes and one-line read errors."""

import pytest

from trait_pipeline.errors import PipelineError
from trait_pipeline.jsonio import atomic_write_bytes, read_json, write_json


def test_write_then_read_round_trips_unicode(tmp_path):
    path = tmp_path / "deep" / "dir" / "x.json"
    write_json(path, {"a": [1, 2], "t": "optimism ✓"})
    assert read_json(path) == {"a": [1, 2], "t": "optimism ✓"}
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_a_failing_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json(path, {"v": object()})  # not serialisable: fails before anything is replaced
    assert read_json(path) == {"v": 1}
    atomic_write_bytes(path, b'{"v": 2}')
    assert read_json(path) == {"v": 2} and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_missing_and_malformed_files_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="missing file"):
        read_json(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n "b": }')
    with pytest.raises(PipelineError, match=r"malformed JSON in .*bad.json: line 2"):
        read_json(bad)


def test_float32_values_are_written_without_float64_noise(tmp_path):
    import numpy as np
    import torch

    from trait_pipeline.jsonio import read_json, write_json

    v = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    values = [float(x) for x in v]  # float() of a float32: float64 noise digits
    stats = [143 / 144, 0.1 + 0.2, 1764463200.5, 0.0, -0.0, 3]  # not float32 values: as they are
    write_json(tmp_path / "a.json", {"v": values, "s": stats, "t": (1.5, float(np.float32(0.1)))})
    text = (tmp_path / "a.json").read_text()
    assert "0.10000000149011612" not in text and "0.1\n" in text
    back = read_json(tmp_path / "a.json")
    assert torch.equal(torch.tensor(back["v"], dtype=torch.float32), v)  # same float32, bit for bit
    assert max(len(repr(x)) for x in back["v"]) <= 15  # sign, 9 digits, point, exponent at most
    assert back["s"] == stats and back["t"] == [1.5, 0.1]
