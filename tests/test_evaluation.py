"""Evaluation: threshold fitted on train, Cohen's d, polarity, combined score and best pick."""

import math

import pytest
import torch

from trait_pipeline.evaluation import (
    add_combined_scores,
    balanced_accuracy,
    best_per_trait,
    cohens_d,
    cosine_scores,
    score_vector,
)


def test_threshold_comes_from_train_not_val():
    v = torch.tensor([1.0, 0.0])
    # train means of cosine: +0.8 and -0.8 -> threshold 0
    tr_p = torch.tensor([[0.8, 0.6], [0.8, -0.6]])
    tr_n = torch.tensor([[-0.8, 0.6], [-0.8, -0.6]])
    # val is shifted up: both classes above 0; a val-fitted midpoint would split them perfectly
    va_p = torch.tensor([[0.9, 0.1], [0.95, 0.1]])
    va_n = torch.tensor([[0.5, 0.5], [0.6, 0.5]])
    s = score_vector(tr_p, tr_n, va_p, va_n, v)
    assert s.threshold == pytest.approx(0.0, abs=1e-6)
    assert s.val_accuracy == 0.5  # every val example is called positive
    assert s.train_accuracy == 1.0 and s.polarity_correct


def test_cohens_d_uses_pooled_unbiased_std():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 2.0])
    assert cohens_d(a, b) == pytest.approx(1.0)  # both have unbiased var 1
    assert cohens_d(b, a) == pytest.approx(-1.0)
    assert cohens_d(torch.tensor([1.0]), torch.tensor([0.0])) == 0.0  # no spread to estimate


def test_cosine_scores_ignore_scale():
    v = torch.tensor([3.0, 0.0])
    acts = torch.tensor([[10.0, 0.0], [0.0, 5.0], [-1.0, 1.0]])
    assert torch.allclose(cosine_scores(acts, v), torch.tensor([1.0, 0.0, -1 / math.sqrt(2)]))


def test_balanced_accuracy_weights_classes_equally():
    assert balanced_accuracy(torch.tensor([1.0]), torch.tensor([-1.0, -1.0, 1.0]), 0.0) == pytest.approx((1 + 2 / 3) / 2)


def test_wrong_polarity_is_flagged_and_scores_zero():
    v = torch.tensor([1.0, 0.0])
    p, n = torch.tensor([[-1.0, 0.1], [-2.0, 0.1]]), torch.tensor([[1.0, 0.1], [2.0, 0.1]])
    s = score_vector(p, n, p, n, v)
    assert not s.polarity_correct
    rows = add_combined_scores([{"trait": "t/a", "method": "probe", "layer": 0, **s.as_dict()}])
    assert rows[0]["combined_score"] == 0.0


def test_best_per_trait_skips_random_baseline_and_normalises_d_per_trait():
    def row(trait, method, layer, acc, d):
        return {"trait": trait, "method": method, "layer": layer, "component": "residual",
                "position": "response[:5]", "val_accuracy": acc, "val_effect_size": d,
                "polarity_correct": True}

    rows = add_combined_scores([
        row("t/a", "random_baseline", 0, 1.0, 0.1), row("t/a", "probe", 3, 0.9, 1.9),
        row("t/a", "mean_diff", 5, 0.95, 2.0), row("t/b", "probe", 1, 0.6, 0.2),
    ])
    best = best_per_trait(rows)
    assert best["t/a"]["method"] == "mean_diff" and best["t/a"]["layer"] == 5
    assert best["t/b"]["combined_score"] == pytest.approx((0.6 + 1.0) / 2)
