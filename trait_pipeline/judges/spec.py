"""What a judge needs to know about a trait, read from the trait's dataset directory.

>>> spec = load_trait_spec("demo/optimism")                    # doctest: +SKIP
>>> spec.name, spec.definition.splitlines()[0]                 # doctest: +SKIP
('optimism', 'Score optimism (0-100).')

``definition.txt`` is the rubric the judge sees, verbatim; ``steering.json`` may carry an
``eval_prompt`` with ``{question}`` and ``{answer}`` placeholders that replaces the default
trait prompt when scoring steered answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config import check_trait_exists
from ..errors import PipelineError
from ..layout import trait_data_dir


@dataclass(frozen=True)
class TraitSpec:
    """A trait as a judge sees it.

    >>> TraitSpec("optimism", "The trait 'optimism'").eval_prompt is None
    True
    """

    name: str  # last path segment of the trait id, e.g. "optimism"
    definition: str  # the rubric text (definition.txt)
    eval_prompt: str | None = None  # custom trait prompt with {question} / {answer}
    trait_id: str | None = None  # "category/name" when known; lets the offline judge refuse others


def default_definition(name: str) -> str:
    return f"The trait '{name}'"


def load_trait_spec(trait: str, datasets_root: Path | None = None) -> TraitSpec:
    """Read ``datasets/traits/{trait}/definition.txt`` and ``steering.json``'s ``eval_prompt``.

    Raises :class:`PipelineError` for an unknown trait, unreadable JSON, or an ``eval_prompt``
    without an ``{answer}`` placeholder (the judge would never see the answer).
    """
    check_trait_exists(trait, datasets_root)
    folder = trait_data_dir(trait, datasets_root)
    name = trait.rsplit("/", 1)[-1]
    definition_file = folder / "definition.txt"
    definition = definition_file.read_text(encoding="utf-8").strip() if definition_file.is_file() else ""
    eval_prompt = None
    steering_file = folder / "steering.json"
    if steering_file.is_file():
        try:
            data = json.loads(steering_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PipelineError(
                f"malformed JSON in {steering_file}: line {exc.lineno}: {exc.msg}"
            ) from None
        raw = data.get("eval_prompt") if isinstance(data, dict) else None
        if raw is not None:
            if not isinstance(raw, str) or "{answer}" not in raw:
                raise PipelineError(
                    f"bad eval_prompt in {steering_file}: expected a string containing "
                    "'{answer}' (and usually '{question}')"
                )
            eval_prompt = raw
    return TraitSpec(
        name=name, definition=definition or default_definition(name), eval_prompt=eval_prompt,
        trait_id=trait,
    )
