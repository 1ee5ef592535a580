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

    def __post_init__(self) -> None:
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

    @property
    def sign(self) -> float:
        return -1.0 if self.base_coef < 0 else 1.0

    @property
    def best(self) -> Step | None:
        ok = [s for s in self.steps if s.coherent(self.min_coherence) and s.trait_mean is not None]
        return max(ok, key=lambda s: self.sign * s.trait_mean) if ok else None

    @property
    def most_coherent(self) -> Step | None:
        scored = [s for s in self.steps if s.coherence_mean is not None]
        return max(scored, key=lambda s: s.coherence_mean) if scored else None

    @property
    def status(self) -> str:
        return STATUS_OK if self.best is not None else STATUS_NO_COHERENT_STEP

    def describe(self) -> str:
        """One line for the stage summary."""
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


def search(base_coefs: dict[int, float], p: SearchParams, evaluate: Evaluate) -> dict[int, LayerSearch]:
    """Run the lockstep walk for every layer; ``evaluate`` gets [(layer, coef)] per step."""
    walks = {
        layer: LayerSearch(layer, round_coef(base), float(p.min_coherence))
        for layer, base in base_coefs.items()
    }
    coef = {layer: round_coef(p.start_mult * base) for layer, base in base_coefs.items()}
    velocity = dict.fromkeys(base_coefs, 1.0)
    for _ in range(int(p.steps)):
        configs = [(layer, coef[layer]) for layer in walks]
        outcomes = list(evaluate(configs))
        if len(outcomes) != len(configs):
            raise RuntimeError(f"evaluate returned {len(outcomes)} outcomes for {len(configs)} configs")
        for (layer, c), (trait, coh) in zip(configs, outcomes):
            walks[layer].steps.append(Step(c, trait, coh))
            coef[layer], velocity[layer] = next_coef(c, velocity[layer], coh, p)
    return walks
