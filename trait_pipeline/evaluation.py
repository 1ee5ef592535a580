"""How well a trait vector separates held-out positive from negative activations.

Scores are cosine similarities between each activation and the vector. The decision
threshold is fitted on the *train* split (midpoint of the class means) and applied to the
val split, so the val accuracy is an honest held-out number (the original fitted it on val).

>>> import torch
>>> v = torch.tensor([1.0, 0.0])
>>> tr_p, tr_n = torch.tensor([[2.0, 1.0], [3.0, 1.0]]), torch.tensor([[-2.0, 1.0], [-1.0, 1.0]])
>>> va_p, va_n = torch.tensor([[1.0, 1.0]]), torch.tensor([[-1.0, 2.0]])
>>> s = score_vector(tr_p, tr_n, va_p, va_n, v)
>>> s.val_accuracy, s.polarity_correct
(1.0, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

EPS = 1e-8
EXCLUDED_FROM_BEST = ("random_baseline",)  # a sanity check, never a trait's best vector


@dataclass(frozen=True)
class VectorScore:
    val_accuracy: float  # balanced accuracy on val, threshold fitted on train
    val_effect_size: float  # |Cohen's d| of val scores (pooled sigma, unbiased std)
    polarity_correct: bool  # positive val examples score higher on average
    threshold: float  # cosine threshold fitted on train
    train_accuracy: float

    def as_dict(self) -> dict:
        return asdict(self)


def cosine_scores(acts: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row of ``acts`` [n, d] with ``vector`` [d]."""
    a, v = acts.float(), vector.float()
    return (a @ v) / (a.norm(dim=1) * v.norm()).clamp_min(EPS)


def cohens_d(a: torch.Tensor, b: torch.Tensor) -> float:
    """Signed (mean(a) - mean(b)) / sqrt((var_a + var_b) / 2), unbiased variances.

    0.0 when neither side has two examples: no spread can be estimated, and dividing by a
    zero spread would report effect sizes of 10^6 for a one-example val split.
    """
    a, b = a.double(), b.double()
    if len(a) < 2 and len(b) < 2:
        return 0.0
    var_a = float(a.var()) if len(a) > 1 else 0.0
    var_b = float(b.var()) if len(b) > 1 else 0.0
    pooled = math.sqrt((var_a + var_b) / 2)
    return float(a.mean() - b.mean()) / max(pooled, EPS)


def balanced_accuracy(pos_scores: torch.Tensor, neg_scores: torch.Tensor, threshold: float) -> float:
    """Mean of the true-positive and true-negative rates of ``score > threshold``."""
    tpr = float((pos_scores > threshold).double().mean())
    tnr = float((neg_scores <= threshold).double().mean())
    return (tpr + tnr) / 2


def score_vector(
    train_pos: torch.Tensor, train_neg: torch.Tensor,
    val_pos: torch.Tensor, val_neg: torch.Tensor, vector: torch.Tensor,
) -> VectorScore:
    """Fit the threshold on train, measure accuracy, effect size and polarity on val."""
    tp, tn = cosine_scores(train_pos, vector), cosine_scores(train_neg, vector)
    threshold = float(tp.mean() + tn.mean()) / 2
    vp, vn = cosine_scores(val_pos, vector), cosine_scores(val_neg, vector)
    return VectorScore(
        val_accuracy=balanced_accuracy(vp, vn, threshold),
        val_effect_size=abs(cohens_d(vp, vn)),
        polarity_correct=bool(vp.mean() > vn.mean()),
        threshold=threshold,
        train_accuracy=balanced_accuracy(tp, tn, threshold),
    )


def add_combined_scores(rows: list[dict]) -> list[dict]:
    """Set ``combined_score = (acc + d / max_d_of_trait) / 2`` (0 when the polarity is wrong).

    Effect sizes are normalised per trait so traits with easy and hard data rank alike.
    """
    max_d: dict[str, float] = {}
    for r in rows:
        max_d[r["trait"]] = max(max_d.get(r["trait"], 0.0), float(r["val_effect_size"]))
    for r in rows:
        d_term = r["val_effect_size"] / max_d[r["trait"]] if max_d[r["trait"]] > 0 else 0.0
        r["combined_score"] = (r["val_accuracy"] + d_term) / 2 if r["polarity_correct"] else 0.0
    return rows


def best_per_trait(rows: list[dict], exclude: tuple[str, ...] = EXCLUDED_FROM_BEST) -> dict[str, dict]:
    """The row with the highest combined score per trait (ties: accuracy, then effect size)."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["method"] in exclude:
            continue
        key = (r["combined_score"], r["val_accuracy"], r["val_effect_size"])
        cur = best.get(r["trait"])
        if cur is None or key > (cur["combined_score"], cur["val_accuracy"], cur["val_effect_size"]):
            best[r["trait"]] = r
    return {
        t: {k: r[k] for k in ("method", "layer", "component", "position", "val_accuracy",
                              "val_effect_size", "combined_score")}
        for t, r in sorted(best.items())
    }
