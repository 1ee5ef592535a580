"""Evaluation: threshold fitted on train, Cohen's d, polarity, combined score and best pick."""

import math

import pytest
import torch

from trait_pipeline.evaluation import (
    add_combined_scores,
    add_null_scores,
    balanced_accuracy,
    best_per_trait,
    cohens_d,
    cosine_scores,
    effect_size_interval,
    null_distribution,
    score_vector,
    small_val_warning,
    wilson_interval,
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


# --- intervals and the null -----------------------------------------------------------------


def _split(seed: int, n: int = 40, d: int = 32, signal: float = 0.6):
    g = torch.Generator().manual_seed(seed)
    axis = torch.zeros(d)
    axis[0] = 1.0
    def draw(sign):
        return torch.randn(n, d, generator=g) + sign * signal * axis + 3.0  # offset: cosines not centred
    return draw(1), draw(-1), draw(1), draw(-1)


def test_wilson_interval_contains_the_estimate_and_narrows_with_n():
    for acc, n in [(0.5, 12), (1.0, 12), (0.9, 48), (0.0, 5)]:
        lo, hi = wilson_interval(acc, n)
        assert 0.0 <= lo <= acc <= hi <= 1.0
    assert [round(x, 3) for x in wilson_interval(1.0, 12)] == [0.758, 1.0]
    small, big = wilson_interval(0.8, 20), wilson_interval(0.8, 200)
    assert big[1] - big[0] < small[1] - small[0]


def test_effect_size_interval_contains_d_and_narrows_with_n():
    lo, hi = effect_size_interval(1.5, 10, 10)
    assert lo < 1.5 < hi
    lo2, hi2 = effect_size_interval(1.5, 100, 100)
    assert hi2 - lo2 < hi - lo


def test_score_carries_intervals():
    tp, tn, vp, vn = _split(0)
    s = score_vector(tp, tn, vp, vn, tp.mean(0) - tn.mean(0))
    assert s.val_accuracy_ci[0] <= s.val_accuracy <= s.val_accuracy_ci[1]
    assert s.val_effect_size_ci[0] <= s.val_effect_size <= s.val_effect_size_ci[1]


def test_random_direction_p_value_is_uniform_over_seeds():
    """A direction drawn like the null's is no better than the null: p ~ U(0, 1)."""
    tp, tn, vp, vn = _split(1)
    null = null_distribution(tp, tn, vp, vn, n=100, seed=7)
    ps = []
    for seed in range(300):
        v = torch.randn(tp.shape[1], generator=torch.Generator().manual_seed(10_000 + seed))
        if float(cosine_scores(tp, v).mean()) < float(cosine_scores(tn, v).mean()):
            v = -v  # oriented on train, as the null's directions and every fitted method are
        row = {"val_effect_size": score_vector(tp, tn, vp, vn, v).val_effect_size,
               "polarity_correct": score_vector(tp, tn, vp, vn, v).polarity_correct}
        ps.append(add_null_scores(row, null)["p_value"])
    ps_sorted = sorted(ps)
    ks = max(abs((i + 1) / len(ps) - p) for i, p in enumerate(ps_sorted))
    assert ks < 0.12, ks
    assert 0.4 < sum(ps) / len(ps) < 0.6
    assert sum(p <= 0.05 for p in ps) / len(ps) < 0.1


def test_a_real_direction_beats_the_null_and_best_needs_it():
    tp, tn, vp, vn = _split(2, signal=1.5)
    null = null_distribution(tp, tn, vp, vn, n=100, seed=0)
    real = score_vector(tp, tn, vp, vn, tp.mean(0) - tn.mean(0))
    row = add_null_scores({"trait": "t", "method": "mean_diff", "layer": 3, "component": "residual",
                           "position": "p", **real.as_dict()}, null)
    assert row["p_value"] == round(1 / 101, 4) and row["null_percentile"] == 100.0 and row["beats_null"]
    weak = {**row, "method": "probe", "layer": 4, "val_accuracy": 1.0, "val_effect_size": 99.0,
            "beats_null": False}
    best = best_per_trait(add_combined_scores([row, weak]))
    assert best["t"]["method"] == "mean_diff"
    assert best_per_trait(add_combined_scores([weak])) == {}
    band = null.band()
    assert band["n"] == 100 and band["val_accuracy"][0] <= band["val_accuracy"][2]


def test_small_val_split_warns():
    assert "6 positive and 6 negative" in small_val_warning(6, 6)
    assert small_val_warning(24, 24) is None
