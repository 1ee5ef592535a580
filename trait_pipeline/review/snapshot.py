"""The resolved snapshot of a job: every interpolation resolved, plus where it all came from.

Hydra's ``.hydra/config.yaml`` keeps ``${...}`` interpolations, so two runs on ``instruct``
and ``rm_lora`` look alike there, and resolving it later resolves against *today's* presets
and environment. The snapshot is resolved once, at job time, and written beside Hydra's
files as ``.hydra/resolved.yaml``::

    schema_version: 1
    stage: steer
    config: {...}            # the job's config, resolved (Hydra's own node left out)
    provenance:
      project: {version, git_commit, git_dirty}
      python, packages: {torch, transformers, peft, hydra-core, omegaconf}
      data: {trait_dataset: {trait, sha256, files}, prompt_set: {name, file, sha256}}
      runtime: {device, dtype}                  # filled in when the model has loaded
      model: {ref, path, revision, hub_commit | content_sha256}
      adapter: {...}                            # same, for a LoRA adapter

Secrets never land in it: a config holds only the *name* of a key's environment variable
(``judge.api_key_env``), and :func:`redact` blanks any value that equals a secret-looking
environment variable or sits under a key named like one.

>>> redact({"judge": {"api_key_env": "OPENAI_API_KEY", "api_key": "sk-123"}})
{'judge': {'api_key_env': 'OPENAI_API_KEY', 'api_key': '<redacted>'}}
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ..jsonio import atomic_write_text
from ..layout import PROJECT_ROOT

SCHEMA_VERSION = 1
SNAPSHOT_NAME = "resolved.yaml"  # under the run folder's .hydra/, beside Hydra's config.yaml
PACKAGES = ("torch", "transformers", "peft", "hydra-core", "omegaconf", "safetensors")
REDACTED = "<redacted>"
# a key *holding* a secret ends in one of these words; ``api_key_env`` (a variable's name) does not
_SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|access[_-]?key|secret|password|passwd|token|credentials?)$", re.IGNORECASE)
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)
# files larger than this are fingerprinted (size, safetensors header, spread blocks), not read whole
FULL_HASH_LIMIT = 512 * 1024 * 1024
_BLOCK = 1 << 20
_SAMPLES = 64


# --- secrets ------------------------------------------------------------------------------
def _secret_values() -> set[str]:
    """Values of environment variables whose names look secret (long enough to match safely)."""
    return {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8}


def redact(obj: Any, secrets: set[str] | None = None) -> Any:
    """``obj`` with secret-looking keys and known secret values replaced by ``<redacted>``."""
    secrets = _secret_values() if secrets is None else secrets

    def walk(x: Any, key: str = "") -> Any:
        if isinstance(x, dict):
            return {k: walk(v, str(k)) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v, key) for v in x]
        if isinstance(x, str):
            if key and _SECRET_KEY.search(key) and x:
                return REDACTED
            for s in secrets:
                if s in x:
                    x = x.replace(s, REDACTED)
        return x

    return walk(obj)


# --- provenance: code and environment -----------------------------------------------------
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=1)
def project_provenance() -> dict:
    """Version, git commit and dirty flag of the code that ran (None outside a git checkout)."""
    from .. import __version__

    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {"version": __version__, "git_commit": commit, "git_dirty": dirty}


def package_versions() -> dict:
    """Installed versions, read from package metadata (nothing is imported)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# --- content hashes -------------------------------------------------------------------------
def file_sha256(path: Path) -> tuple[str, str]:
    """``(digest, method)``: sha256 of the bytes, or a fingerprint for very large files."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(_BLOCK), b""):
                h.update(chunk)
            return h.hexdigest(), "sha256"
        h.update(str(size).encode())
        head = f.read(8)
        h.update(head)
        if path.suffix == ".safetensors" and len(head) == 8:  # the header names every tensor
            h.update(f.read(min(int.from_bytes(head, "little"), 100 << 20)))
        for i in range(_SAMPLES):
            f.seek((size - _BLOCK) * i // (_SAMPLES - 1))
            h.update(f.read(_BLOCK))
    return h.hexdigest(), "sha256-sampled"


@lru_cache(maxsize=64)
def _tree_hash(path: str, mtimes: tuple) -> dict:
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts) \
        if root.is_dir() else [root]
    h = hashlib.sha256()
    methods = set()
    for p in files:
        digest, method = file_sha256(p)
        methods.add(method)
        rel = p.relative_to(root).as_posix() if root.is_dir() else p.name
        h.update(f"{rel}\t{digest}\n".encode())
    return {"content_sha256": h.hexdigest(), "hash_method": "sha256-sampled" if "sha256-sampled" in methods
            else "sha256", "files": len(files)}


def content_hash(path: str | Path) -> dict:
    """Content hash of a file or a directory tree (names and bytes), e.g. a local model."""
    root = Path(path)
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in sorted(root.rglob("*")) if p.is_file()) if root.is_dir() else (
        (str(root), root.stat().st_size, root.stat().st_mtime_ns),)
    return dict(_tree_hash(str(root), stats))


def hub_commit(repo_id: str, revision: str | None = None, cache_dir: str | None = None) -> str | None:
    """The commit a hub id resolves to in the local Hugging Face cache (never the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in ("config.json", "adapter_config.json"):
        try:
            found = try_to_load_from_cache(repo_id, name, revision=revision, cache_dir=cache_dir)
        except Exception:  # noqa: BLE001 -- a malformed id: nothing to record
            return None
        if isinstance(found, str):
            return Path(found).parent.name
    return None


def weights_provenance(ref: str, path: str, revision: str | None = None,
                       commit: str | None = None) -> dict:
    """What a model or adapter reference resolved to: a hub commit, or a content hash."""
    out: dict[str, Any] = {"ref": ref, "revision": revision}
    local = Path(path).expanduser()
    if local.exists():
        out["path"] = str(local)
        out.update(content_hash(local))
    else:
        out["hub_commit"] = commit or hub_commit(path, revision)
    return out


def data_provenance(cfg: Any) -> dict:
    """Content hashes of the trait dataset(s) and the prompt set(s) a job reads."""
    from ..config import as_list
    from ..layout import STEERING_PROMPT_SET, LayoutError, prompt_set_path, trait_data_dir

    root = Path(cfg["paths"]["datasets"]) if cfg.get("paths") else None
    out: dict[str, Any] = {}
    traits = {}
    for trait in as_list(cfg.get("trait")):
        try:
            d = trait_data_dir(str(trait), root)
        except LayoutError:
            continue
        if d.is_dir():
            traits[str(trait)] = {"dir": str(d), **content_hash(d)}
    if traits:
        out["trait_datasets"] = traits
    sets = {}
    stage = cfg.get("stage")
    if stage in ("steer", "infer"):
        for ps in as_list(cfg.get("prompt_set")):
            if ps == STEERING_PROMPT_SET:
                for trait in as_list(cfg.get("trait")):
                    f = trait_data_dir(str(trait), root) / "steering.json"
                    if f.is_file():
                        sets[f"{ps}:{trait}"] = {"file": str(f), "sha256": file_sha256(f)[0]}
                continue
            try:
                f = prompt_set_path(str(ps), root)
            except LayoutError:
                continue
            if f.is_file():
                sets[str(ps)] = {"file": str(f), "sha256": file_sha256(f)[0]}
    if sets:
        out["prompt_sets"] = sets
    return out


# --- the snapshot ---------------------------------------------------------------------------
def snapshot_path(run_dir: Path) -> Path:
    return Path(run_dir) / ".hydra" / SNAPSHOT_NAME


def build(config: dict, *, stage: str | None, run_id: str | None = None,
          overrides: list[str] | None = None) -> dict:
    """The snapshot of an already resolved job config (a plain dict without ``hydra``)."""
    config = redact(config)
    return {
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "run_id": run_id,
        "overrides": list(overrides or []),
        "config": config,
        "provenance": {
            "project": project_provenance(),
            "python": platform.python_version(),
            "packages": package_versions(),
            "data": data_provenance(config),
        },
    }


def write(run_dir: Path, snap: dict) -> Path:
    path = snapshot_path(run_dir)
    atomic_write_text(path, dump(snap))
    return path


def dump(snap: dict) -> str:
    return yaml.safe_dump(redact(snap), sort_keys=False, default_flow_style=False, allow_unicode=True)


def read(path: Path) -> dict:
    from ..errors import PipelineError

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"missing snapshot {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PipelineError(f"malformed snapshot {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or "config" not in data:
        raise PipelineError(f"{path} is not a resolved snapshot (no 'config' key)")
    return data


def add_runtime(run_dir: Path, *, device: str | None, dtype: str | None,
                model: dict | None = None, adapter: dict | None = None) -> None:
    """Record what the job actually loaded (called once the model is in memory)."""
    path = snapshot_path(run_dir)
    if not path.is_file():
        return
    snap = read(path)
    prov = snap.setdefault("provenance", {})
    prov["runtime"] = {"device": device, "dtype": dtype}
    if model is not None:
        prov["model"] = model
    if adapter is not None:
        prov["adapter"] = adapter
    write(run_dir, snap)
