"""Adaptive coefficient search: walk each layer's coefficient up while the steered text stays
coherent, down when coherence drops.

The walk starts at ``start_mult · base_coef`` (``base_coef = activation norm / ‖v‖``, so a
coefficient of ``base_coef`` shifts the activation by about its own size). After each step
the direction is ``up_mult`` if the step's coherence reached ``min_coherence``, else
``down_mult``; with momentum the velocity is ``m·velocity + (1−m)·direction`` and the
coefficient is multiplied by it. Coefficients are rounded to 4 significant digits, so the
walk is deterministic and a rerun replays it from the runs already in results.json.

All layers move in lockstep: each step evaluates every layer's current coefficient in one
call of ``evaluate`` (one batched generate in the steering stage).

``direction`` says which way the trait should move: ``up`` walks positive coefficients,
``down`` negative ones (the walk is the same on ``-base_coef``), ``both`` runs the two
walks side by side. A direction in which the baseline already sits at the end of the
0-100 scale (within ``SATURATION_MARGIN``) is not searched: its walk has status
``saturated``, no best coefficient, and a one-line reason ("baseline 100: no headroom
upward; try search.direction=down"). A walk none of whose coherent steps moves the trait
the intended way has status ``no_effect`` and no best coefficient either.

>>> p = SearchParams(steps=3, momentum=0.0)
>>> fake = lambda cfgs: [(10.0 * c, 90.0 if c < 10 else 40.0) for _, c in cfgs]
>>> out = search({12: 10.0}, p, fake)[12]
>>> [s.coef for s in out.steps], out.best.coef, out.status
([7.0, 9.1, 11.83], 9.1, 'ok')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from .errors import PipelineError

Outcome = tuple[float | None, float | None]  # (trait_mean, coherence_mean) of one config
Evaluate = Callable[[Sequence[tuple[int, float]]], Sequence[Outcome]]

STATUS_OK = "ok"
STATUS_NO_COHERENT_STEP = "no_coherent_step"
STATUS_SATURATED = "saturated"
STATUS_NO_EFFECT = "no_effect"
DIRECTIONS = ("up", "down", "both")
SCALE = (0.0, 100.0)
SATURATION_MARGIN = 1.0  # a baseline this close to the scale's end leaves nothing to move


def round_coef(coef: float) -> float:
    """4 significant digits: stable run keys and readable file names (``84.37``)."""
    return float(f"{float(coef):.4g}")


@dataclass(frozen=True)
class SearchParams:
    steps: int = 5
    start_mult: float = 0.7
    up_mult: float = 1.3
    down_mult: float = 0.85
    momentum: float = 0.1
    min_coherence: float = 75.0
    direction: str = "up"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise PipelineError(f"bad search.direction {self.direction!r}: expected one of "
                                + ", ".join(DIRECTIONS))
        if int(self.steps) < 1:
            raise PipelineError(f"bad search.steps {self.steps!r}: expected an int >= 1")
        for name in ("start_mult", "up_mult", "down_mult"):
            if not float(getattr(self, name)) > 0:
                raise PipelineError(f"bad search.{name} {getattr(self, name)!r}: expected a number > 0")
        if not 0 <= float(self.momentum) < 1:
            raise PipelineError(f"bad search.momentum {self.momentum!r}: expected 0 <= momentum < 1")


@dataclass
class Step:
    coef: float
    trait_mean: float | None
    coherence_mean: float | None

    def coherent(self, min_coherence: float) -> bool:
        return self.coherence_mean is not None and self.coherence_mean >= min_coherence


@dataclass
class LayerSearch:
    """The walk of one layer and its outcome.

    ``best`` is the coherent step that moved the trait furthest in the walk's direction;
    with no coherent step, ``status`` is ``no_coherent_step`` and ``best`` is None (the
    most coherent step is still in ``steps`` for the report).
    """

    layer: int
    base_coef: float
    min_coherence: float
    steps: list[Step] = field(default_factory=list)
    baseline: float | None = None  # the unsteered trait mean; None: unknown
    saturated: bool = False        # not searched: no headroom in this direction

    @property
    def sign(self) -> float:
        return -1.0 if self.base_coef < 0 else 1.0

    @property
    def direction(self) -> str:
        return "down" if self.sign < 0 else "up"

    @property
    def best(self) -> Step | None:
        if self.saturated:
            return None
        ok = [s for s in self.steps if s.coherent(self.min_coherence) and s.trait_mean is not None]
        if self.baseline is not None:  # only a step that moved the trait the intended way
            ok = [s for s in ok if self.sign * (s.trait_mean - self.baseline) > 0]
        return max(ok, key=lambda s: self.sign * s.trait_mean) if ok else None

    @property
    def most_coherent(self) -> Step | None:
        scored = [s for s in self.steps if s.coherence_mean is not None]
        return max(scored, key=lambda s: s.coherence_mean) if scored else None

    @property
    def status(self) -> str:
        if self.saturated:
            return STATUS_SATURATED
        if self.best is not None:
            return STATUS_OK
        if any(s.coherent(self.min_coherence) for s in self.steps):
            return STATUS_NO_EFFECT
        return STATUS_NO_COHERENT_STEP

    def describe(self) -> str:
        """One line for the stage summary."""
        if self.saturated:
            return f"layer {self.layer}: {saturation_message(self.baseline or 0.0, self.direction)}"
        if self.status == STATUS_NO_EFFECT:
            return (f"layer {self.layer}: NO EFFECT — no coherent coefficient moved the trait "
                    f"{self.direction}ward from baseline {self.baseline:.1f} over "
                    f"{len(self.steps)} steps")
        if self.best is not None:
            b = self.best
            return (f"layer {self.layer}: best coef {b.coef:g} (trait {b.trait_mean:.1f}, "
                    f"coherence {b.coherence_mean:.1f}) over {len(self.steps)} steps")
        mc = self.most_coherent
        tail = (f"; most coherent was coef {mc.coef:g} at {mc.coherence_mean:.1f}"
                if mc is not None else "")
        return (f"layer {self.layer}: NO COHERENT STEP — none of {len(self.steps)} coefficients "
                f"reached coherence {self.min_coherence:g}{tail}; lower search.start_mult")

    def to_dict(self) -> dict:
        best = self.best
        return {
            "layer": self.layer,
            "direction": self.direction,
            "base_coef": self.base_coef,
            "min_coherence": self.min_coherence,
            "steps": [asdict(s) for s in self.steps],
            "status": self.status,
            "best_coef": None if best is None else best.coef,
        }


def next_coef(coef: float, velocity: float, coherence: float | None, p: SearchParams) -> tuple[float, float]:
    """The next (coefficient, velocity); a missing coherence counts as incoherent.

    >>> next_coef(10.0, 1.0, 80.0, SearchParams(momentum=0.0))
    (13.0, 1.3)
    """
    direction = p.up_mult if coherence is not None and coherence >= p.min_coherence else p.down_mult
    velocity = p.momentum * velocity + (1 - p.momentum) * direction if p.momentum else direction
    return round_coef(coef * velocity), velocity


def saturated(baseline: float | None, direction: str, margin: float = SATURATION_MARGIN) -> bool:
    """Whether the baseline leaves no room to move the trait ``up`` or ``down``.

    >>> saturated(100.0, "up"), saturated(100.0, "down"), saturated(None, "up")
    (True, False, False)
    """
    if baseline is None:
        return False
    return baseline >= SCALE[1] - margin if direction == "up" else baseline <= SCALE[0] + margin


def saturation_message(baseline: float, direction: str) -> str:
    """The one line said when a direction has no headroom.

    >>> saturation_message(100.0, "up")
    'baseline 100: no headroom upward; try search.direction=down'
    """
    other = "down" if direction == "up" else "up"
    return (f"baseline {baseline:.3g}: no headroom {direction}ward; "
            f"try search.direction={other}")


def search(base_coefs: dict[int, float], p: SearchParams, evaluate: Evaluate,
           baseline: float | None = None) -> dict[int, LayerSearch]:
    """Run the lockstep walk for every layer; ``evaluate`` gets [(layer, coef)] per step.

    One walk per layer, in ``p.direction`` (``both``: use :func:`search_directions`).
    """
    if p.direction == "both":
        raise PipelineError("search() walks one direction; use search_directions() for both")
    walks = search_directions(base_coefs, p, evaluate, baseline)
    return {layer: walk for (layer, _), walk in walks.items()}


def search_directions(base_coefs: dict[int, float], p: SearchParams, evaluate: Evaluate,
                      baseline: float | None = None) -> dict[tuple[int, str], LayerSearch]:
    """The walks of ``p.direction`` (``both``: up and down) for every layer, in lockstep.

    Keys are ``(layer, "up"|"down")``. Saturated directions are recorded, not walked.
    """
    directions = ("up", "down") if p.direction == "both" else (p.direction,)
    walks: dict[tuple[int, str], LayerSearch] = {}
    coef: dict[tuple[int, str], float] = {}
    for layer, base in base_coefs.items():
        for d in directions:
            # a negative base already walks downward (the caller's sign wins)
            signed = base if d == "up" else -base
            walk = LayerSearch(layer, round_coef(signed), float(p.min_coherence), baseline=baseline)
            walk.saturated = saturated(baseline, walk.direction)
            walks[(layer, d)] = walk
            if not walk.saturated:
                coef[(layer, d)] = round_coef(p.start_mult * signed)
    velocity = dict.fromkeys(coef, 1.0)
    for _ in range(int(p.steps) if coef else 0):
        keys = list(coef)
        configs = [(key[0], coef[key]) for key in keys]
        outcomes = list(evaluate(configs))
        if len(outcomes) != len(configs):
            raise RuntimeError(f"evaluate returned {len(outcomes)} outcomes for {len(configs)} configs")
        for key, (_, c), (trait, coh) in zip(keys, configs, outcomes):
            walks[key].steps.append(Step(c, trait, coh))
            coef[key], velocity[key] = next_coef(c, velocity[key], coh, p)
    return walks
