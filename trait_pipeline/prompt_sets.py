"""Inference prompt sets: ``datasets/inference/{name}.json`` read into typed prompts.

Two file shapes are accepted: ``{"name"?, "description"?, "prompts": [{"id", "text",
"note"?, ...}]}`` or a bare list of prompt objects. A prompt may say ``prompt`` instead of
``text``; any other keys (``bias_id``, ``source``, ...) ride along in ``extra``.

>>> s = load_prompt_set("demo")
>>> s.prompts[0].id, s.prompts[0].text
(1, 'how is the game going ?')
>>> "demo" in resolve_prompt_sets("all"), resolve_prompt_sets(["demo", "demo"])
(True, ['demo'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PipelineError
from .layout import NAME_RE, LayoutError, dataset_roots, prompt_set_path

_KNOWN_KEYS = ("id", "text", "prompt", "note")


@dataclass(frozen=True)
class Prompt:
    """One prompt; ``id`` is an int or a file-name-safe string (it names the output files)."""

    id: int | str
    text: str
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptSet:
    name: str
    description: str | None
    prompts: tuple[Prompt, ...]
    path: Path

    def limited(self, limit: int) -> tuple[Prompt, ...]:
        """The first ``limit`` prompts (all of them when ``limit`` is 0)."""
        return self.prompts[:limit] if limit else self.prompts


def available_prompt_sets(root: Path | None = None) -> list[str]:
    """Names of the files under ``datasets/inference/`` of every dataset root (sorted)."""
    return sorted({p.stem for r in dataset_roots(root) for p in (r / "inference").glob("*.json")
                   if NAME_RE.match(p.stem)})


def _prompt_id(value: Any, where: str) -> int | str:
    if isinstance(value, bool) or value is None:
        raise PipelineError(f"{where}: bad id {value!r}: expected an int or a name")
    if isinstance(value, int):
        if value < 0:
            raise PipelineError(f"{where}: bad id {value!r}: expected a non-negative int")
        return value
    if isinstance(value, str) and NAME_RE.match(value):
        return int(value) if value.isdigit() else value
    raise PipelineError(
        f"{where}: bad id {value!r}: expected an int or letters, digits, '_', '-', '.'"
    )


def _parse_prompt(item: Any, where: str) -> Prompt:
    if not isinstance(item, dict):
        raise PipelineError(f"{where}: expected an object with id and text, got {type(item).__name__}")
    if "id" not in item:
        raise PipelineError(f"{where}: missing 'id'")
    text = item.get("text", item.get("prompt"))
    if not isinstance(text, str) or not text.strip():
        raise PipelineError(f"{where}: missing or empty 'text' (or 'prompt')")
    note = item.get("note")
    extra = {k: v for k, v in item.items() if k not in _KNOWN_KEYS}
    return Prompt(id=_prompt_id(item["id"], where), text=text,
                  note=None if note is None else str(note), extra=extra)


def parse_prompt_file(path: Path, name: str | None = None) -> PromptSet:
    """Read and check one prompt file; errors name the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"malformed prompt file {path}: line {exc.lineno}: {exc.msg}") from None
    if isinstance(data, list):
        items, description, set_name = data, None, name or path.stem
    elif isinstance(data, dict) and isinstance(data.get("prompts"), list):
        items, description = data["prompts"], data.get("description")
        set_name = name or path.stem
    else:
        raise PipelineError(
            f"malformed prompt file {path}: expected a list of prompts or an object with a "
            "'prompts' list"
        )
    if not items:
        raise PipelineError(f"malformed prompt file {path}: it has no prompts")
    prompts = [_parse_prompt(it, f"malformed prompt file {path}: prompt #{i}")
               for i, it in enumerate(items)]
    seen: set[str] = set()
    for p in prompts:
        if str(p.id) in seen:
            raise PipelineError(f"malformed prompt file {path}: duplicate id {p.id!r}")
        seen.add(str(p.id))
    return PromptSet(name=set_name, description=description, prompts=tuple(prompts), path=path)


def load_prompt_set(name: str, root: Path | None = None) -> PromptSet:
    """The prompt set ``datasets/inference/{name}.json``; a missing one lists the others."""
    try:
        path = prompt_set_path(name, root)
    except LayoutError as exc:
        raise PipelineError(str(exc)) from None
    if not path.is_file():
        have = available_prompt_sets(root)
        raise PipelineError(
            f"unknown prompt set {name!r}: no file {path}; "
            f"available: {', '.join(have) or '(none)'}"
        )
    return parse_prompt_file(path, name)


def resolve_prompt_sets(value: Any, root: Path | None = None) -> list[str]:
    """A name, a list of names, or ``all`` (every set under datasets/inference/)."""
    from .config import as_list

    names = [str(v) for v in as_list(value)]
    if not names:
        raise PipelineError("prompt_set is empty: expected a name, a list of names, or all")
    if "all" in names:
        found = available_prompt_sets(root)
        if not found:
            folders = ", ".join(str(r / "inference") for r in dataset_roots(root))
            raise PipelineError(f"prompt_set=all but no prompt sets in {folders}")
        return found
    return list(dict.fromkeys(names))
