"""Ways to turn positive/negative activations of one layer into a unit trait vector.

Every method takes ``pos`` [n_pos, d] and ``neg`` [n_neg, d] and returns a
:class:`TraitVector` whose ``vector`` is float32 with norm 1, pointing from negative to
positive. The seeded methods (gradient, random_baseline, and probe's solver) give the same
vector for the same seed.

>>> import torch
>>> pos, neg = torch.tensor([[2.0, 0.0], [4.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
>>> tv = compute("mean_diff", pos, neg)
>>> [round(x, 3) for x in tv.vector.tolist()], round(tv.raw_norm, 3)
([0.949, -0.316], 3.162)
>>> compute("pca", pos, neg)
Traceback (most recent call last):
...
trait_pipeline.errors.PipelineError: unknown method 'pca'; expected one of: mean_diff, probe, gradient, random_baseline
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .errors import PipelineError

EPS = 1e-8


@dataclass
class TraitVector:
    """A unit direction plus what the method learned on the way (probe bias, accuracy...)."""

    vector: torch.Tensor  # [d], float32, unit norm
    raw_norm: float  # norm of the direction before normalising (e.g. |mu+ - mu-|)
    extras: dict = field(default_factory=dict)  # JSON-safe numbers for the vector's metadata


def _unit(v: torch.Tensor) -> tuple[torch.Tensor, float]:
    v = v.detach().float().cpu()
    n = float(v.norm())
    return v / max(n, EPS), n


def _check(pos: torch.Tensor, neg: torch.Tensor) -> None:
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise PipelineError(
            f"activations must be [n, d] with the same d, got {tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    if len(pos) == 0 or len(neg) == 0:
        raise PipelineError(
            f"need positive and negative examples, got {len(pos)} positive and {len(neg)} negative"
        )


def _row_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over rows in float32, as one BLAS mat-vec: about 2x faster on CPU than
    ``x.mean(0)``'s column reduction (bench/bench_extraction_math.py)."""
    x = x.float()
    return torch.mv(x.T, x.new_full((x.shape[0],), 1.0 / x.shape[0]))


def mean_diff(pos: torch.Tensor, neg: torch.Tensor, seed: int = 0) -> TraitVector:
    """Difference of the class means (in float32, so bf16 activations lose nothing)."""
    v, n = _unit(_row_mean(pos) - _row_mean(neg))
    return TraitVector(v, n)


def probe(pos: torch.Tensor, neg: torch.Tensor, seed: int = 0) -> TraitVector:
    """L2 logistic regression on row-normalised activations (removes the model's scale).

    sklearn's defaults otherwise: C=1, lbfgs, no standardisation, no class weights.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([pos, neg]).float()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(EPS)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000, random_state=seed)
    clf.fit(x.numpy(), y)
    v, n = _unit(torch.from_numpy(clf.coef_[0].copy()))
    extras = {"bias": float(clf.intercept_[0]), "train_acc": float(clf.score(x.numpy(), y))}
    return TraitVector(v, n, extras)


def gradient(
    pos: torch.Tensor, neg: torch.Tensor, seed: int = 0, steps: int = 100, lr: float = 0.01,
    norm_penalty: float = 0.01,
) -> TraitVector:
    """Adam on the separation of mean projections, from a seeded random unit direction.

    The loss only sees the direction, so the small norm penalty just keeps ``v`` bounded.
    The start has norm 1, not sqrt(d) as in the original: Adam moves each coordinate by
    about ``lr`` per step, so from an N(0, I) start 100 steps barely leave the random init
    (cosine with the optimum ~0.3-0.5 at d=64..1024); from a unit start they converge.
    """
    p, q = pos.float().cpu(), neg.float().cpu()
    gen = torch.Generator().manual_seed(int(seed))
    v = torch.randn(p.shape[1], generator=gen)
    v = (v / v.norm().clamp_min(EPS)).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            u = v / v.norm().clamp_min(EPS)
            loss = -((p @ u).mean() - (q @ u).mean()) + norm_penalty * v.norm()
            loss.backward()
            opt.step()
    out, n = _unit(v)
    return TraitVector(out, n, {"steps": steps, "lr": lr})


def random_baseline(pos: torch.Tensor, neg: torch.Tensor, seed: int = 0) -> TraitVector:
    """A seeded random direction: the accuracy any real method must beat (about 0.5)."""
    gen = torch.Generator().manual_seed(int(seed))
    v, n = _unit(torch.randn(pos.shape[1], generator=gen))
    return TraitVector(v, n)


Method = Callable[..., TraitVector]
METHODS: dict[str, Method] = {
    "mean_diff": mean_diff,
    "probe": probe,
    "gradient": gradient,
    "random_baseline": random_baseline,
}


def get_method(name: str) -> Method:
    try:
        return METHODS[str(name)]
    except KeyError:
        raise PipelineError(
            f"unknown method {name!r}; expected one of: {', '.join(METHODS)}"
        ) from None


def compute(name: str, pos: torch.Tensor, neg: torch.Tensor, seed: int = 0) -> TraitVector:
    """Run method ``name`` on one layer's activations."""
    method = get_method(name)
    _check(pos, neg)
    return method(pos, neg, seed=seed)


def midpoint_baseline(pos: torch.Tensor, neg: torch.Tensor, vector: torch.Tensor) -> float:
    """Projection of the class midpoint (mu+ + mu-)/2 onto the unit vector."""
    mid = (pos.float().mean(0) + neg.float().mean(0)) / 2
    return float(mid @ vector.float())
