"""The ``judge`` config group as typed settings, every value checked before anything loads.

>>> check_judge_config({"kind": "openai", "max_concurrency": 8})["max_concurrency"]
8
>>> check_judge_config({"kind": "gpt"})
Traceback (most recent call last):
...
trait_pipeline.errors.PipelineError: unknown judge kind 'gpt'; expected one of: none, offline, openai, local_hf

Importing this module is cheap (no torch, no httpx), so the command line can check a judge
config before a stage starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import PipelineError

KINDS = ("none", "offline", "openai", "local_hf")
DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class MinMass:
    """Least probability the integer tokens must carry for a score to count."""

    trait: float = 0.25  # also used for scenario and response vetting
    coherence: float = 0.1


@dataclass(frozen=True)
class OpenAISettings:
    """``judge=openai`` (conf/judge/openai.yaml). Holds the key's env var name, never the key."""

    base_url: str = DEFAULT_BASE_URL
    model: str = "gpt-4.1-mini"
    api_key_env: str | None = "OPENAI_API_KEY"  # None: the server needs no key
    max_concurrency: int = 20
    retries: int = 3  # retries after the first attempt
    backoff_s: float = 0.5  # first wait; doubles each retry (with jitter), at most 30 s
    timeout_s: float = 60.0
    top_logprobs: int = 20
    seed: int | None = 42
    min_mass: MinMass = field(default_factory=MinMass)
    cache: bool = True


@dataclass(frozen=True)
class LocalHFSettings:
    """``judge=local_hf`` (conf/judge/local_hf.yaml)."""

    model: str  # hub id or local path
    revision: str | None = None
    device: str = "auto"
    dtype: str = "bfloat16"
    batch_size: int = 8  # prompts per forward pass; halves on out-of-memory
    use_chat_template: bool = True
    min_mass: MinMass = field(default_factory=MinMass)
    cache: bool = True

_OPENAI_KEYS = ("base_url", "model", "api_key_env", "max_concurrency", "retries", "backoff_s",
                "timeout_s", "top_logprobs", "seed", "min_mass", "cache")
_LOCAL_KEYS = ("model", "revision", "device", "dtype", "batch_size", "use_chat_template",
               "min_mass", "cache")
_ALLOWED = {"none": (), "offline": ("model",), "openai": _OPENAI_KEYS, "local_hf": _LOCAL_KEYS}


def _plain(judge_cfg: Any) -> dict[str, Any]:
    if judge_cfg is None:
        return {"kind": "none"}
    if isinstance(judge_cfg, Mapping):
        return dict(judge_cfg)
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(judge_cfg, DictConfig):
            return OmegaConf.to_container(judge_cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    raise PipelineError(f"bad judge config {judge_cfg!r}: expected a mapping with a 'kind' key")


def check_judge_config(judge_cfg: Any) -> dict[str, Any]:
    """Validate a judge config without building anything (no model, no key lookup).

    Returns it as a plain dict; raises :class:`PipelineError` naming the bad key or value.
    """
    cfg = _plain(judge_cfg)
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise PipelineError(f"unknown judge kind {kind!r}; expected one of: {', '.join(KINDS)}")
    unknown = sorted(set(cfg) - {"kind", *_ALLOWED[kind]})
    if unknown:
        raise PipelineError(
            f"unknown key judge.{unknown[0]} for judge kind {kind!r}; "
            f"expected: {', '.join(_ALLOWED[kind]) or '(none)'}"
        )
    if kind == "openai":
        openai_settings(cfg)
    elif kind == "local_hf":
        local_hf_settings(cfg)
    return cfg


# value checks ---------------------------------------------------------------------------------
def _number(cfg: dict, key: str, default: float, lo: float, hi: float | None = None,
            integer: bool = False) -> Any:
    value = cfg.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = value >= lo and (hi is None or value <= hi)
    if not ok:
        what = "an integer" if integer else "a number"
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise PipelineError(f"bad judge.{key} {value!r}: expected {what} {bound}")
    return int(value) if integer else float(value)


def _text(cfg: dict, key: str, default: str | None, allow_none: bool = False) -> str | None:
    value = cfg.get(key, default)
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PipelineError(f"bad judge.{key} {value!r}: expected a non-empty string")
    return value


def _flag(cfg: dict, key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise PipelineError(f"bad judge.{key} {value!r}: expected true or false")
    return value


def _min_mass(cfg: dict) -> MinMass:
    value = cfg.get("min_mass")
    if value is None:
        return MinMass()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        m = _number(cfg, "min_mass", 0.0, 0.0, 1.0)
        return MinMass(trait=m, coherence=m)
    if isinstance(value, Mapping):
        extra = sorted(set(value) - {"trait", "coherence"})
        if extra:
            raise PipelineError(f"unknown key judge.min_mass.{extra[0]}; expected: trait, coherence")
        d = MinMass()
        return MinMass(
            trait=_number(dict(value), "trait", d.trait, 0.0, 1.0),
            coherence=_number(dict(value), "coherence", d.coherence, 0.0, 1.0),
        )
    raise PipelineError(
        f"bad judge.min_mass {value!r}: expected a number in [0, 1] or {{trait: .., coherence: ..}}"
    )


def openai_settings(cfg: dict) -> OpenAISettings:
    base_url = _text(cfg, "base_url", DEFAULT_BASE_URL)
    if not base_url.startswith(("http://", "https://")):
        raise PipelineError(
            f"bad judge.base_url {base_url!r}: expected http(s)://host[:port]/v1"
        )
    seed = cfg.get("seed", 42)
    return OpenAISettings(
        base_url=base_url,
        model=_text(cfg, "model", "gpt-4.1-mini"),
        api_key_env=_text(cfg, "api_key_env", "OPENAI_API_KEY", allow_none=True),
        max_concurrency=_number(cfg, "max_concurrency", 20, 1, integer=True),
        retries=_number(cfg, "retries", 3, 0, integer=True),
        backoff_s=_number(cfg, "backoff_s", 0.5, 0.0),
        timeout_s=_number(cfg, "timeout_s", 60.0, 0.001),
        top_logprobs=_number(cfg, "top_logprobs", 20, 1, 20, integer=True),
        seed=None if seed is None else _number(cfg, "seed", 42, 0, integer=True),
        min_mass=_min_mass(cfg),
        cache=_flag(cfg, "cache", True),
    )


def local_hf_settings(cfg: dict) -> LocalHFSettings:
    return LocalHFSettings(
        model=_text(cfg, "model", None),
        revision=_text(cfg, "revision", None, allow_none=True),
        device=_text(cfg, "device", "auto"),
        dtype=_text(cfg, "dtype", "bfloat16"),
        batch_size=_number(cfg, "batch_size", 8, 1, integer=True),
        use_chat_template=_flag(cfg, "use_chat_template", True),
        min_mass=_min_mass(cfg),
        cache=_flag(cfg, "cache", True),
    )
