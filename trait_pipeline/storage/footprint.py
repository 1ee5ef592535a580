"""Disk footprint of activation files, estimated before the first one is written.

A stage that writes activations (``infer``'s raw per-token tensors, ``extract``'s window
means) computes the size of its safetensors files from their shapes, prints it, and refuses
in one line when it exceeds the free space of the target disk (``disk_check=false``
writes anyway). Sizes are exact for known shapes (header included); ``infer`` assumes every
response runs to ``max_new_tokens``, so its figure is an upper bound, reached when they do.

>>> safetensors_bytes({"x": (4, 2)}, 4, {})
104
>>> human(70_312_000_000)
'70.3 GB'
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError

_DTYPE_TAG = {1: "U8", 2: "BF16", 4: "F32", 8: "F64"}


def safetensors_bytes(shapes: Mapping[str, Sequence[int]], elt_bytes: int,
                      metadata: Mapping[str, str] | None) -> int:
    """The size of a safetensors file holding ``shapes`` (8-byte length + JSON header + data)."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, shape in shapes.items():
        n = elt_bytes
        for s in shape:
            n *= int(s)
        header[name] = {"dtype": _DTYPE_TAG.get(elt_bytes, "F32"), "shape": [int(s) for s in shape],
                        "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False)
    pad = (8 - len(text.encode()) % 8) % 8  # the format aligns the data on 8 bytes
    return 8 + len(text.encode()) + pad + offset


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def free_bytes(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


@dataclass(frozen=True)
class Footprint:
    """An estimate of what a stage is about to write under ``target``."""

    bytes: int
    what: str  # e.g. "raw activations of 150 prompts"
    detail: str  # how it was counted
    target: Path

    def line(self, free: int | None = None) -> str:
        free = free_bytes(self.target) if free is None else free
        return (f"disk: {self.what} ≈ {human(self.bytes)} ({self.detail}) under {self.target}; "
                f"free {human(free)}")


def check_disk(fp: Footprint, enabled: bool = True, hint: str = "") -> None:
    """Print the estimate; raise a one-line :class:`PipelineError` when it does not fit."""
    free = free_bytes(fp.target)
    print(fp.line(free), flush=True)
    if enabled and fp.bytes > free:
        raise PipelineError(
            f"{fp.what} need about {human(fp.bytes)} but only {human(free)} is free under "
            f"{fp.target}; {hint + ', or ' if hint else ''}pass disk_check=false to write anyway")
