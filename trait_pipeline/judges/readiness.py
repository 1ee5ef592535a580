"""Is the configured judge usable? Checked before any model loads, without building the judge.

A real experiment preset (``experiment=rm_syco``) picks ``judge=openai``; without the API key
its variable names, a stage would otherwise load a 70B model and then fail at the first
score. :func:`check_judge_ready` fails first, in one line naming the ways out.

>>> judge_in_use({"stage": "extract", "steps": ["generate"], "judge": {"kind": "openai"}})
False
>>> judge_in_use({"stage": "steer", "judge": {"kind": "openai"}})
True

Importing this module is cheap (no torch, no httpx).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import PipelineError


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return cfg.get(key, default) if hasattr(cfg, "get") else default


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def judge_in_use(cfg: Any) -> bool:
    """Whether this stage's job will call its judge (and so needs it reachable)."""
    judge = _get(cfg, "judge") or {}
    if _get(judge, "kind", "none") == "none":
        return False
    stage = _get(cfg, "stage")
    if stage == "steer":
        return True
    if stage == "extract":
        return "vet" in [str(s) for s in _as_list(_get(cfg, "steps", ["vet"]))]
    if stage == "infer":
        return bool(_get(cfg, "bias_score", False))
    return False


_WAYS_OUT = {
    "steer": "or judge=local_hf judge.model=<hub id or path> (in-process)",
    "extract": "or judge=local_hf judge.model=<hub id or path>, or judge=none (no vetting)",
    "infer": "or judge=local_hf judge.model=<hub id or path>, or bias_score=false",
}


def check_judge_ready(cfg: Any) -> None:
    """Raise :class:`PipelineError` when an ``openai`` judge this job needs has no API key.

    Only the variable's *name* appears in the message, never a value.
    """
    if not judge_in_use(cfg):
        return
    judge = _get(cfg, "judge") or {}
    if _get(judge, "kind") != "openai":
        return
    env = _get(judge, "api_key_env", "OPENAI_API_KEY")
    if env is None or str(env).strip() in ("", "null", "None") or os.environ.get(str(env)):
        return
    stage = str(_get(cfg, "stage", ""))
    raise PipelineError(
        f"judge=openai (experiment {_get(cfg, 'experiment')!r}, model {_get(judge, 'model')!r} at "
        f"{_get(judge, 'base_url')}) needs an API key in ${env}, which is not set: export {env}=..., "
        "or use a server without auth (e.g. vLLM: judge.base_url=http://HOST:8000/v1 "
        "judge.model=<served model> judge.api_key_env=null), "
        + _WAYS_OUT.get(stage, "or judge=local_hf judge.model=<hub id or path>")
    )
