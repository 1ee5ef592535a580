"""A trait's dataset: contrastive scenarios, judge rubric and steering questions.

Each trait lives in ``datasets/traits/{category}/{name}/``:

- ``positive.txt`` / ``negative.txt``: one scenario (prompt) per line; line *i* of both files
  is a contrastive pair. ``positive.jsonl`` / ``negative.jsonl`` take precedence when present:
  one ``{"prompt": str, "system_prompt"?: str}`` object per line.
- ``definition.txt``: the judge rubric, verbatim (fallback ``The trait '<name>'``).
- ``steering.json``: ``{"questions": [str, ...], "eval_prompt"?: str}`` for the steering stage.

>>> data = load_trait_data("demo/optimism")                     # doctest: +SKIP
>>> len(data.positive) == len(data.negative), data.positive[0].prompt[:10]  # doctest: +SKIP
(True, 'the future')
>>> load_steering_questions("demo/optimism")[0]                 # doctest: +SKIP
'how is the project going ?'

Every problem with the files is a :class:`PipelineError` naming the file (and line).
Nothing here imports torch, so configuration checks can load a dataset cheaply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .config import check_trait_exists
from .errors import PipelineError
from .layout import NAME_RE, dataset_roots, trait_data_dir

POLARITIES = ("positive", "negative")


@dataclass(frozen=True)
class Scenario:
    """One prompt of a contrastive pair; ``line`` is its 1-based line in the source file."""

    prompt: str
    system_prompt: str | None = None
    line: int = 0


@dataclass(frozen=True)
class TraitData:
    """The aligned positive/negative scenarios of a trait (``positive[i]`` pairs ``negative[i]``)."""

    trait: str
    directory: Path
    positive: list[Scenario]
    negative: list[Scenario]
    files: tuple[str, str]  # file names the scenarios came from, for messages and metadata

    @property
    def n_pairs(self) -> int:
        return len(self.positive)

    @property
    def has_system_prompts(self) -> bool:
        return any(s.system_prompt for s in self.positive + self.negative)

    def head(self, n: int) -> TraitData:
        """The first ``n`` pairs (``n <= 0`` keeps all): quick runs on a slice of a dataset."""
        if n <= 0 or n >= self.n_pairs:
            return self
        return TraitData(self.trait, self.directory, self.positive[:n], self.negative[:n], self.files)

    def hash(self) -> str:
        """Content hash of the scenarios (what a vector's ``dataset_hash`` records)."""
        h = hashlib.sha256()
        for polarity, scenarios in zip(POLARITIES, (self.positive, self.negative)):
            for s in scenarios:
                h.update(f"{polarity}\t{s.system_prompt or ''}\t{s.prompt}\n".encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class SteeringSet:
    """The questions steering asks, and an optional custom judge prompt."""

    questions: list[str]
    eval_prompt: str | None = None


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path} is not UTF-8 text ({exc.reason})") from None


def _parse_txt(path: Path) -> list[Scenario | None]:
    """One scenario per line; ``None`` marks a blank line (kept so pairs stay aligned)."""
    return [Scenario(t.strip(), None, i) if t.strip() else None
            for i, t in enumerate(_read_lines(path), start=1)]


def _parse_jsonl(path: Path) -> list[Scenario | None]:
    out: list[Scenario | None] = []
    for i, text in enumerate(_read_lines(path), start=1):
        if not text.strip():
            out.append(None)
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PipelineError(f"malformed JSON in {path} line {i}: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise PipelineError(f"bad line in {path} line {i}: expected a JSON object with a 'prompt'")
        prompt, system = obj.get("prompt"), obj.get("system_prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise PipelineError(f"bad line in {path} line {i}: expected a non-empty string 'prompt'")
        if system is not None and not isinstance(system, str):
            raise PipelineError(f"bad line in {path} line {i}: 'system_prompt' must be a string")
        out.append(Scenario(prompt.strip(), system or None, i))
    return out


def _scenario_file(folder: Path, polarity: str) -> Path | None:
    for ext in ("jsonl", "txt"):
        if (folder / f"{polarity}.{ext}").is_file():
            return folder / f"{polarity}.{ext}"
    return None


def _load_side(folder: Path, polarity: str) -> tuple[Path, list[Scenario | None]]:
    path = _scenario_file(folder, polarity)
    if path is None:
        raise PipelineError(f"missing {polarity}.txt (or {polarity}.jsonl) in {folder}")
    rows = _parse_jsonl(path) if path.suffix == ".jsonl" else _parse_txt(path)
    while rows and rows[-1] is None:  # trailing blank lines carry no pair
        rows.pop()
    if not rows:
        raise PipelineError(f"{path} is empty: expected one scenario per line")
    return path, rows


def load_trait_data(trait: str, datasets_root: Path | None = None) -> TraitData:
    """Load and align a trait's positive/negative scenarios.

    Line *i* of the positive file pairs with line *i* of the negative file, so both must have
    the same number of scenarios and blank lines in the same places.
    """
    check_trait_exists(trait, datasets_root)
    folder = trait_data_dir(trait, datasets_root)
    (pos_path, pos), (neg_path, neg) = (_load_side(folder, p) for p in POLARITIES)
    n_pos, n_neg = sum(r is not None for r in pos), sum(r is not None for r in neg)
    if n_pos != n_neg or len(pos) != len(neg):
        raise PipelineError(
            f"misaligned scenarios for {trait}: {pos_path.name} has {n_pos} and {neg_path.name} "
            f"has {n_neg} (line i of each file must form a pair)"
        )
    for p, n, lineno in zip(pos, neg, range(1, len(pos) + 1)):
        if (p is None) != (n is None):
            blank, other = (pos_path, neg_path) if p is None else (neg_path, pos_path)
            raise PipelineError(
                f"misaligned scenarios for {trait}: {blank} line {lineno} is blank but "
                f"{other.name} line {lineno} is not (line i of each file must form a pair)"
            )
    positive = [s for s in pos if s is not None]
    negative = [s for s in neg if s is not None]
    return TraitData(trait, folder, positive, negative, (pos_path.name, neg_path.name))


def load_trait_definition(trait: str, datasets_root: Path | None = None) -> str:
    """The judge rubric of ``trait`` (``definition.txt``), or ``The trait '<name>'``."""
    check_trait_exists(trait, datasets_root)
    path = trait_data_dir(trait, datasets_root) / "definition.txt"
    text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    return text or f"The trait '{trait.rsplit('/', 1)[-1]}'"


def load_steering(trait: str, datasets_root: Path | None = None) -> SteeringSet:
    """``steering.json`` of ``trait``: its questions and optional ``eval_prompt``."""
    check_trait_exists(trait, datasets_root)
    path = trait_data_dir(trait, datasets_root) / "steering.json"
    if not path.is_file():
        raise PipelineError(f"missing {path}: steering needs a questions file for {trait}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"malformed JSON in {path}: line {exc.lineno}: {exc.msg}") from None
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list) or not questions:
        raise PipelineError(f"bad {path}: expected {{\"questions\": [str, ...]}} with at least one question")
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise PipelineError(f"bad {path}: question {i} is not a non-empty string")
    eval_prompt = data.get("eval_prompt")
    if eval_prompt is not None and not isinstance(eval_prompt, str):
        raise PipelineError(f"bad {path}: 'eval_prompt' must be a string")
    return SteeringSet([q.strip() for q in questions], eval_prompt)


def load_steering_questions(trait: str, datasets_root: Path | None = None) -> list[str]:
    """The steering questions of ``trait`` (``steering.json``'s ``questions``)."""
    return load_steering(trait, datasets_root).questions


def discover_traits(category: str | None = None, datasets_root: Path | None = None) -> list[str]:
    """Traits (``category/name``) that have positive and negative scenario files, sorted."""
    found: set[str] = set()
    for base in dataset_roots(datasets_root):  # the user's datasets, then the shipped ones
        root = base / "traits"
        if not root.is_dir():
            continue
        for cat in (p for p in root.iterdir() if p.is_dir() and NAME_RE.match(p.name)):
            if category is not None and cat.name != category:
                continue
            for folder in (p for p in cat.iterdir() if p.is_dir() and NAME_RE.match(p.name)):
                if all(_scenario_file(folder, pol) for pol in POLARITIES):
                    found.add(f"{cat.name}/{folder.name}")
    return sorted(found)
