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
from .safety.files import apply_umask

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
        apply_umask(tmp)  # mkstemp makes 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unreadable(path: Path, exc: BaseException) -> PipelineError:
    from .errors import one_line

    return PipelineError(
        f"cannot read {path}: {one_line(exc)} (truncated or not a safetensors file); move it "
        "aside or delete it and rerun the stage that writes it")


def read_metadata(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001  SafetensorError, OSError: both mean "unreadable"
        raise _unreadable(path, exc) from None
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
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as exc:  # noqa: BLE001  SafetensorError, OSError: both mean "unreadable"
        raise _unreadable(path, exc) from None
    return tensors, read_metadata(path)


def check_loads(path: Path) -> str | None:
    """Why ``path`` (safetensors or JSON) would not load, or None if its header reads fine."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                list(f.keys())
        elif path.suffix == ".json":
            from .jsonio import read_json

            read_json(path)
    except Exception as exc:  # noqa: BLE001  any failure to load is the answer
        from .errors import one_line

        return f"{path.name} no longer loads ({one_line(exc)[:120]})"
    return None


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
