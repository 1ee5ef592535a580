"""Trait vectors on disk: one safetensors file per layer, provenance in its metadata.

>>> import torch, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "layer3.safetensors"
>>> save_vector(p, torch.ones(4), {"model": "demo:base", "layer": 3, "method": "mean_diff"})
>>> v, meta = load_vector(p)
>>> v.shape, meta["layer"], meta["layer_convention"][:9]
(torch.Size([4]), 3, 'output of')

Metadata values are JSON-encoded strings (safetensors metadata is ``str -> str``); every
file carries at least the keys of :data:`PROVENANCE_KEYS`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import PipelineError
from .layers import LAYER_CONVENTION

TENSOR_KEY = "vector"
PROVENANCE_KEYS = (
    "experiment", "trait", "model", "revision", "lora", "model_variant", "layer",
    "layer_convention", "component", "position", "method", "dataset_hash",
)


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write a safetensors file through a temp file + rename: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {str(k): json.dumps(v) for k, v in metadata.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: t.detach().contiguous().cpu() for k, t in tensors.items()}, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def load_tensors(path: Path, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    if not Path(path).is_file():
        raise PipelineError(f"missing file {path}")
    with safe_open(str(path), framework="pt", device=device) as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    return tensors, read_metadata(path)


def save_vector(path: Path, vector: torch.Tensor, provenance: dict) -> None:
    """Save a 1-D vector with its provenance (``layer_convention`` is filled in)."""
    if vector.ndim != 1:
        raise PipelineError(f"a trait vector must be 1-D, got shape {tuple(vector.shape)}")
    meta = {"layer_convention": LAYER_CONVENTION, **provenance}
    atomic_save_tensors(Path(path), {TENSOR_KEY: vector.float()}, meta)


def load_vector(path: Path) -> tuple[torch.Tensor, dict]:
    tensors, meta = load_tensors(Path(path))
    if TENSOR_KEY not in tensors:
        raise PipelineError(f"{path} holds no {TENSOR_KEY!r} tensor")
    return tensors[TENSOR_KEY], meta


def dataset_hash(lines: Iterable[str]) -> str:
    """A short content hash of the data a vector was built from."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
