"""How well a trait vector separates held-out positive from negative activations.

Scores are cosine similarities between each activation and the vector. The decision
threshold is fitted on the *train* split (midpoint of the class means) and applied to the
val split, so the val accuracy is an honest held-out number (the original fitted it on val).

Two things keep a small val split from flattering a vector:

- **Intervals.** Val accuracy comes with a 95 % Wilson interval, the effect size with a
  95 % normal-approximation interval (Hedges & Olkin's standard error of d).
- **A null.** :func:`null_distribution` scores N seeded random unit directions per layer,
  each oriented on *train* the way a fitted method would be, on the same val split. A
  vector's ``p_value`` is the share of that null whose signed val effect size reaches its
  own (with the +1 correction); ``best`` only considers vectors with ``p_value <= alpha``.

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
Z95 = 1.959963984540054
NULL_DIRECTIONS = 100  # random directions per layer in the null (a matmul: cheap)
ALPHA = 0.05           # a vector beats the null when its p-value is at most this
MIN_VAL_PER_CLASS = 20  # below this, val numbers are too coarse to rank vectors; warn


@dataclass(frozen=True)
class VectorScore:
    val_accuracy: float  # balanced accuracy on val, threshold fitted on train
    val_effect_size: float  # |Cohen's d| of val scores (pooled sigma, unbiased std)
    polarity_correct: bool  # positive val examples score higher on average
    threshold: float  # cosine threshold fitted on train
    train_accuracy: float
    val_accuracy_ci: tuple[float, float] = (0.0, 1.0)  # 95 % Wilson interval
    val_effect_size_ci: tuple[float, float] = (0.0, 0.0)  # 95 %, normal approximation

    @property
    def signed_effect_size(self) -> float:
        """The val effect size, negative when the polarity is wrong (what the null ranks)."""
        return self.val_effect_size if self.polarity_correct else -self.val_effect_size

    def as_dict(self) -> dict:
        d = asdict(self)
        d["val_accuracy_ci"] = list(self.val_accuracy_ci)
        d["val_effect_size_ci"] = list(self.val_effect_size_ci)
        return d


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion observed as ``accuracy`` over ``n`` trials.

    For a balanced accuracy, ``n`` is the number of val examples (exact when the classes
    are balanced, a close approximation otherwise).

    >>> [round(x, 3) for x in wilson_interval(1.0, 12)]
    [0.758, 1.0]
    >>> [round(x, 3) for x in wilson_interval(1.0, 80)]
    [0.954, 1.0]
    """
    if n <= 0:
        return (0.0, 1.0)
    p = min(max(accuracy, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def effect_size_interval(d: float, n_pos: int, n_neg: int, z: float = Z95) -> tuple[float, float]:
    """95 % interval of Cohen's d from its large-sample standard error.

    >>> [round(x, 2) for x in effect_size_interval(2.0, 6, 6)]
    [0.61, 3.39]
    """
    if n_pos < 2 or n_neg < 2:
        return (float("-inf"), float("inf")) if d else (0.0, 0.0)
    n = n_pos + n_neg
    se = math.sqrt(n / (n_pos * n_neg) + d * d / (2 * n))
    return (d - z * se, d + z * se)


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
    acc = balanced_accuracy(vp, vn, threshold)
    d = abs(cohens_d(vp, vn))
    return VectorScore(
        val_accuracy=acc,
        val_effect_size=d,
        polarity_correct=bool(vp.mean() > vn.mean()),
        threshold=threshold,
        train_accuracy=balanced_accuracy(tp, tn, threshold),
        val_accuracy_ci=wilson_interval(acc, len(vp) + len(vn)),
        val_effect_size_ci=effect_size_interval(d, len(vp), len(vn)),
    )


@dataclass(frozen=True)
class NullDistribution:
    """Val scores of ``n`` seeded random unit directions at one layer, each oriented on train."""

    effect_sizes: torch.Tensor  # [n] signed val Cohen's d
    accuracies: torch.Tensor    # [n] balanced val accuracy
    seed: int

    @property
    def n(self) -> int:
        return len(self.effect_sizes)

    def p_value(self, signed_effect_size: float) -> float:
        """(1 + #null >= observed) / (n + 1): the chance a random direction does as well."""
        hits = int((self.effect_sizes >= signed_effect_size - 1e-12).sum())
        return (1 + hits) / (self.n + 1)

    def percentile(self, signed_effect_size: float) -> float:
        """Share of the null (in %) strictly below the observed effect size."""
        return 100.0 * float((self.effect_sizes < signed_effect_size - 1e-12).double().mean())

    def band(self) -> dict:
        """2.5 / 50 / 97.5 % quantiles of accuracy and effect size (the dashboard's band)."""
        q = torch.tensor([0.025, 0.5, 0.975], dtype=torch.float64)
        return {"n": self.n, "seed": self.seed,
                "val_accuracy": [round(float(x), 4) for x in torch.quantile(self.accuracies.double(), q)],
                "val_effect_size": [round(float(x), 4) for x in torch.quantile(self.effect_sizes.double(), q)]}


def null_distribution(
    train_pos: torch.Tensor, train_neg: torch.Tensor,
    val_pos: torch.Tensor, val_neg: torch.Tensor, n: int = NULL_DIRECTIONS, seed: int = 0,
) -> NullDistribution:
    """Score ``n`` random unit directions (seeded) the way :func:`score_vector` scores a vector.

    Each direction is flipped so that train positives project higher than train negatives,
    as every fitted method's vector is; otherwise half the null would point the wrong way
    and any vector would look significant. One matmul per split.
    """
    gen = torch.Generator().manual_seed(int(seed))
    dirs = torch.randn(train_pos.shape[1], n, generator=gen, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True).clamp_min(EPS)

    def cos(acts: torch.Tensor) -> torch.Tensor:
        a = acts.double()
        return (a @ dirs) / a.norm(dim=1, keepdim=True).clamp_min(EPS)

    tp, tn, vp, vn = cos(train_pos), cos(train_neg), cos(val_pos), cos(val_neg)
    sign = torch.where(tp.mean(0) >= tn.mean(0), 1.0, -1.0).to(torch.float64)
    tp, tn, vp, vn = tp * sign, tn * sign, vp * sign, vn * sign
    threshold = (tp.mean(0) + tn.mean(0)) / 2
    acc = ((vp > threshold).double().mean(0) + (vn <= threshold).double().mean(0)) / 2
    if len(vp) < 2 and len(vn) < 2:
        d = torch.zeros(n, dtype=torch.float64)
    else:
        var_p = vp.var(0) if len(vp) > 1 else torch.zeros(n, dtype=torch.float64)
        var_n = vn.var(0) if len(vn) > 1 else torch.zeros(n, dtype=torch.float64)
        d = (vp.mean(0) - vn.mean(0)) / ((var_p + var_n) / 2).sqrt().clamp_min(EPS)
    return NullDistribution(effect_sizes=d, accuracies=acc, seed=int(seed))


def add_null_scores(row: dict, null: NullDistribution, alpha: float = ALPHA) -> dict:
    """Put ``p_value``, ``null_percentile`` and ``beats_null`` on an evaluation row."""
    signed = row["val_effect_size"] if row["polarity_correct"] else -row["val_effect_size"]
    row["p_value"] = round(null.p_value(signed), 4)
    row["null_percentile"] = round(null.percentile(signed), 1)
    row["beats_null"] = row["p_value"] <= alpha
    return row


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
    """The row with the highest combined score per trait (ties: accuracy, then effect size).

    Only rows that beat the null compete (rows scored before the null existed, without a
    ``beats_null`` key, still do); a trait none of whose vectors beats it has no best.
    """
    best: dict[str, dict] = {}
    for r in rows:
        if r["method"] in exclude or not r.get("beats_null", True):
            continue
        key = (r["combined_score"], r["val_accuracy"], r["val_effect_size"])
        cur = best.get(r["trait"])
        if cur is None or key > (cur["combined_score"], cur["val_accuracy"], cur["val_effect_size"]):
            best[r["trait"]] = r
    keys = ("method", "layer", "component", "position", "val_accuracy", "val_effect_size",
            "combined_score", "val_accuracy_ci", "val_effect_size_ci", "p_value",
            "null_percentile")
    return {t: {k: r[k] for k in keys if k in r} for t, r in sorted(best.items())}


def small_val_warning(n_pos: int, n_neg: int, minimum: int = MIN_VAL_PER_CLASS) -> str | None:
    """A one-line warning when the val split is too small to rank vectors, else None.

    >>> small_val_warning(6, 6)
    'val split has 6 positive and 6 negative examples (< 20 per class): accuracies move in steps of 0.083 and many random directions reach 1.0; see the intervals and p-values'
    """
    if min(n_pos, n_neg) >= minimum:
        return None
    step = 1 / max(1, min(n_pos, n_neg)) / 2
    return (f"val split has {n_pos} positive and {n_neg} negative examples (< {minimum} per "
            f"class): accuracies move in steps of {step:.3f} and many random directions "
            "reach 1.0; see the intervals and p-values")
