"""Which saved vector of a trait to use when the user names none: the best one, with why.

Two kinds of evidence rank the candidates, and they are never put on one scale:

1. ``steering``: the steering runs on the variant being monitored (its ``results.json``
   under ``steering/{trait}/{variant}/...``); among single-vector runs whose coherence is at
   least ``min_coherence``, the largest rise of the trait score over the unsteered baseline.
2. ``effect_size``: the held-out effect size of the extraction evaluation
   (``extraction/_evaluation/{extraction variant}.json``).

Any candidate with steering evidence outranks every candidate with only an effect size
(a delta in judge points and a Cohen's d are not comparable); within a kind the higher
score wins. An explicit ``layer`` (and optional ``method``/``position``) picks a vector by
hand (``manual``).

>>> # choice = select_vector(lay, "demo/optimism", extraction_variant="base",
>>> #                        application_variant="instruct")
>>> # choice.layer, choice.method, choice.selection_source, choice.score
>>> # (10, 'probe', 'effect_size', 2.7)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PipelineError
from .layout import Layout
from .positions import PositionError, canonical

log = logging.getLogger(__name__)

MANUAL_METHOD_ORDER = ("probe", "mean_diff", "gradient")  # when layer is given without method
SOURCE_RANK = {"steering": 2, "effect_size": 1}
NEVER_BEST = ("random_baseline",)  # a sanity check, never picked automatically


@dataclass(frozen=True)
class VectorChoice:
    """A vector on disk and why it was chosen."""

    trait: str
    model_variant: str  # the extraction variant the vector comes from
    position: str
    component: str
    method: str
    layer: int
    path: Path
    selection_source: str  # steering | effect_size | manual
    score: float | None = None
    coefficient: float | None = None  # the steering weight behind a steering score
    reason: str = ""  # why this vector, in words (recorded in every projection file)

    def describe(self) -> str:
        why = self.selection_source if self.score is None else f"{self.selection_source} {self.score:.3g}"
        return (f"{self.trait}: L{self.layer} {self.method} {self.component} {self.position} "
                f"from {self.model_variant} ({why})")


@dataclass(frozen=True)
class _Candidate:
    position: str
    component: str
    method: str
    layer: int
    path: Path


def _read_json(path: Path) -> Any:
    """A results/evaluation file, or None when it is unreadable (reported, not fatal)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _same_position(a: Any, b: Any) -> bool:
    try:
        return canonical(str(a)) == canonical(str(b))
    except PositionError:
        return False


def candidates(
    layout: Layout, trait: str, variant: str, *, position: str | None = None,
    component: str | None = None, method: str | None = None, layer: int | None = None,
) -> list[_Candidate]:
    """Saved vectors of ``trait`` under ``variant``, filtered by whatever is given."""
    out = []
    for pos, comp, meth, la, path in layout.vector_files(trait, variant):
        if position is not None and not _same_position(pos, position):
            continue
        if (component is not None and comp != component) or (method is not None and meth != method):
            continue
        if layer is not None and la != int(layer):
            continue
        out.append(_Candidate(pos, comp, meth, la, path))
    return out


def steering_scores(
    layout: Layout, trait: str, variant: str, min_coherence: float
) -> dict[tuple[str, str, str, int], tuple[float, float | None]]:
    """``(position, component, method, layer) -> (best delta, its weight)`` from steering runs."""
    best: dict[tuple[str, str, str, int], tuple[float, float | None]] = {}
    for position, _prompt_set, path in layout.steering_results_files(trait, variant):
        data = _read_json(path)
        if not isinstance(data, dict):
            continue
        base = _num((data.get("baseline") or {}).get("trait_mean"))
        if base is None:
            continue
        for run in data.get("runs") or []:
            try:
                vectors = run["config"]["vectors"]
                result = run["result"]
            except (KeyError, TypeError):
                continue
            if not isinstance(vectors, list) or len(vectors) != 1 or not isinstance(vectors[0], dict):
                continue  # multi-vector runs say nothing about one vector
            vec = vectors[0]
            trait_mean, coherence = _num(result.get("trait_mean")), _num(result.get("coherence_mean"))
            layer = vec.get("layer")
            if trait_mean is None or coherence is None or coherence < min_coherence:
                continue
            if isinstance(layer, bool) or not isinstance(layer, int):
                continue
            pos = vec.get("position", position)
            if not _same_position(pos, position):
                continue
            key = (canonical(position), str(vec.get("component", "residual")),
                   str(vec.get("method", "probe")), layer)
            delta = trait_mean - base
            if key not in best or delta > best[key][0]:
                best[key] = (delta, _num(vec.get("weight")))
    return best


def effect_sizes(layout: Layout, trait: str, variant: str) -> dict[tuple[str, str, str, int], float]:
    """``(position, component, method, layer) -> val_effect_size`` from the extraction evaluation."""
    path = layout.evaluation_path(variant)
    if not path.is_file():
        return {}
    data = _read_json(path)
    rows = None
    if isinstance(data, dict):  # "results" here; the original called it "all_results"
        rows = data.get("results", data.get("all_results"))
    out: dict[tuple[str, str, str, int], float] = {}
    for row in rows or []:
        if not isinstance(row, dict) or row.get("trait") != trait:
            continue
        d, layer = _num(row.get("val_effect_size")), row.get("layer")
        if d is None or isinstance(layer, bool) or not isinstance(layer, int):
            continue
        try:
            pos = canonical(str(row.get("position")))
        except PositionError:
            continue
        out[(pos, str(row.get("component", "residual")), str(row.get("method")), layer)] = d
    return out


def select_vector(
    layout: Layout, trait: str, *, extraction_variant: str, application_variant: str,
    layer: int | None = None, method: str | None = None, position: str | None = None,
    component: str = "residual", min_coherence: float = 75.0,
) -> VectorChoice:
    """The vector to project ``trait`` on (see the module docstring for the ranking)."""
    found = candidates(layout, trait, extraction_variant, position=position,
                       component=component, method=method, layer=layer)
    if not found:
        wanted = ", ".join(
            f"{k}={v}" for k, v in (("layer", layer), ("method", method), ("position", position),
                                    ("component", component)) if v is not None
        )
        anything = candidates(layout, trait, extraction_variant)
        hint = (f"it has vectors, but none with {wanted}" if anything else
                f"run: python -m trait_pipeline.extract trait={trait} "
                f"model_variant={extraction_variant}")
        raise PipelineError(
            f"no vectors for trait {trait!r} under extraction variant {extraction_variant!r}; {hint}"
        )

    def choice(c: _Candidate, source: str, score: float | None = None,
               coef: float | None = None, reason: str = "") -> VectorChoice:
        return VectorChoice(trait, extraction_variant, c.position, c.component, c.method, c.layer,
                            c.path, source, score, coef, reason)

    if layer is not None:
        return choice(_manual(found, trait, layer, method), "manual",
                      reason=f"layer={layer}" + (f" method={method}" if method else "")
                      + " given in the config")

    steer = steering_scores(layout, trait, application_variant, min_coherence)
    effect = effect_sizes(layout, trait, extraction_variant)
    ranked = []
    for c in found:
        if c.method in NEVER_BEST:
            continue
        key = (canonical(c.position), c.component, c.method, c.layer)
        if key in steer:
            ranked.append((SOURCE_RANK["steering"], steer[key][0], c, "steering", steer[key][1]))
        elif key in effect:
            ranked.append((SOURCE_RANK["effect_size"], effect[key], c, "effect_size", None))
    if not ranked:
        raise PipelineError(
            f"trait {trait!r} has vectors under {extraction_variant!r} but no score to pick one: "
            f"no steering results on {application_variant!r} with coherence >= {min_coherence:g} "
            f"and no evaluation in {layout.evaluation_path(extraction_variant)}; "
            "pass layer=N (and method=...) to choose one"
        )
    # sort by kind first, then by score within the kind: the scales are never compared
    _, score, best, source, coef = max(ranked, key=lambda r: (r[0], r[1]))
    if source == "steering":
        reason = (f"largest steering gain on {application_variant!r} among runs with coherence "
                  f">= {min_coherence:g}: {score:+.1f} trait points over the baseline"
                  + (f" at coefficient {coef:g}" if coef is not None else ""))
    else:
        reason = (f"no steering run on {application_variant!r} with coherence >= "
                  f"{min_coherence:g} for any candidate; highest validation effect size "
                  f"(Cohen's d {score:.2f}) in the {extraction_variant!r} evaluation")
    return choice(best, source, score, coef, reason)


def _manual(found: list[_Candidate], trait: str, layer: int, method: str | None) -> _Candidate:
    if method is None:
        methods = {c.method for c in found}
        order = [m for m in MANUAL_METHOD_ORDER if m in methods] + sorted(methods)
        found = [c for c in found if c.method == order[0]]
    positions = sorted({(c.position, c.component) for c in found})
    if len(positions) > 1:
        listed = ", ".join(p for p, _ in positions)
        raise PipelineError(
            f"trait {trait!r} has layer-{layer} vectors at several positions ({listed}); "
            "pass position=... to choose one"
        )
    return found[0]
