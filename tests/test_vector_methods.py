"""Vector methods: unit vectors, mean_diff against a direct computation, seeded reproducibility."""

import pytest
import torch

from trait_pipeline.errors import PipelineError
from trait_pipeline.vector_methods import METHODS, compute, midpoint_baseline


def _data(seed=0, n=40, d=16, shift=3.0):
    g = torch.Generator().manual_seed(seed)
    direction = torch.zeros(d)
    direction[2] = 1.0
    pos = torch.randn(n, d, generator=g) + shift * direction
    neg = torch.randn(n + 5, d, generator=g) - shift * direction
    return pos, neg


def test_mean_diff_matches_direct_computation():
    pos, neg = _data()
    tv = compute("mean_diff", pos, neg)
    direct = pos.mean(0) - neg.mean(0)
    assert torch.allclose(tv.vector, direct / direct.norm(), atol=1e-6)
    assert tv.raw_norm == pytest.approx(float(direct.norm()), rel=1e-5)


def test_mean_diff_of_bf16_activations_is_computed_in_float32():
    pos, neg = _data()
    tv = compute("mean_diff", pos.bfloat16(), neg.bfloat16())
    direct = pos.bfloat16().float().mean(0) - neg.bfloat16().float().mean(0)
    assert tv.vector.dtype == torch.float32
    assert torch.allclose(tv.vector, direct / direct.norm(), atol=1e-6)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_returns_a_unit_float32_vector(method):
    pos, neg = _data()
    tv = compute(method, pos, neg, seed=3)
    assert tv.vector.shape == (16,) and tv.vector.dtype == torch.float32
    assert float(tv.vector.norm()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("method", ["probe", "gradient", "random_baseline"])
def test_seeded_methods_are_reproducible(method):
    pos, neg = _data()
    a, b = compute(method, pos, neg, seed=7), compute(method, pos, neg, seed=7)
    assert torch.equal(a.vector, b.vector)


@pytest.mark.parametrize("method", ["gradient", "random_baseline"])
def test_other_seed_other_start(method):
    pos, neg = _data()
    a, b = compute(method, pos, neg, seed=1), compute(method, pos, neg, seed=2)
    assert not torch.equal(a.vector, b.vector)


@pytest.mark.parametrize("method", ["mean_diff", "probe", "gradient"])
def test_real_methods_find_the_planted_direction(method):
    pos, neg = _data()
    tv = compute(method, pos, neg, seed=0)
    assert float(tv.vector[2]) > 0.8  # points from negative to positive along dim 2


def test_probe_records_bias_and_train_accuracy():
    tv = compute("probe", *_data())
    assert set(tv.extras) == {"bias", "train_acc"} and tv.extras["train_acc"] > 0.95


def test_random_baseline_is_near_orthogonal_to_the_trait():
    pos, neg = _data(d=256)
    tv = compute("random_baseline", pos, neg, seed=0)
    assert abs(float(tv.vector[2])) < 0.3


def test_midpoint_baseline_is_the_projection_of_the_class_midpoint():
    pos, neg = _data()
    v = compute("mean_diff", pos, neg).vector
    assert midpoint_baseline(pos, neg, v) == pytest.approx(float((pos.mean(0) + neg.mean(0)) / 2 @ v), abs=1e-5)


def test_unknown_method_and_bad_shapes_are_one_line_errors():
    pos, neg = _data()
    with pytest.raises(PipelineError, match="unknown method 'pca'; expected one of"):
        compute("pca", pos, neg)
    with pytest.raises(PipelineError, match="same d"):
        compute("mean_diff", pos, neg[:, :3])
    with pytest.raises(PipelineError, match="need positive and negative"):
        compute("mean_diff", pos[:0], neg)
