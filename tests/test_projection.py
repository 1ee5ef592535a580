"""Per-token projections: unit vector, fp32, baseline, norms, one value per token."""

import pytest
import torch

from trait_pipeline.errors import PipelineError
from trait_pipeline.projection import mean, project_tokens, unit


def test_projection_is_onto_the_unit_vector_per_token():
    torch.manual_seed(0)
    acts = torch.randn(5, 3, 8)
    v = torch.randn(8) * 7  # its scale must not matter
    p = project_tokens(acts, v, layer=1)
    expected = acts[:, 1] @ (v / v.norm())
    assert len(p.projections) == 5
    assert torch.allclose(torch.tensor(p.projections), expected, atol=1e-5)
    assert torch.allclose(torch.tensor(p.token_norms), acts[:, 1].norm(dim=-1), atol=1e-5)
    assert torch.allclose(torch.tensor(p.activation_norms), acts.norm(dim=-1).mean(0), atol=1e-5)
    assert len(p.activation_norms) == 3


def test_baseline_is_subtracted_when_centring():
    acts = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])
    assert project_tokens(acts, torch.tensor([0.0, 2.0]), 0).projections == [4.0, 0.0]
    assert project_tokens(acts, torch.tensor([0.0, 2.0]), 0, baseline=1.5).projections == [2.5, -1.5]


def test_bf16_activations_are_projected_in_fp32():
    torch.manual_seed(1)
    acts = torch.randn(4, 2, 16).to(torch.bfloat16)
    v = torch.randn(16)
    p = project_tokens(acts, v, 0)
    ref = acts[:, 0].float() @ (v / v.norm())
    assert torch.allclose(torch.tensor(p.projections), ref, atol=1e-5)


def test_empty_response_has_no_rows_and_no_mean():
    p = project_tokens(torch.zeros(0, 3, 4), torch.ones(4), 2)
    assert p.projections == [] and p.token_norms == [] and p.activation_norms == []
    assert mean(p.projections) is None and mean([1.0, 2.0]) == 1.5


@pytest.mark.parametrize("acts, vec, layer, match", [
    (torch.zeros(2, 3, 4), torch.ones(4), 3, r"layer 3 out of range.*0\.\.2"),
    (torch.zeros(2, 3, 4), torch.ones(5), 0, r"dimension 5 .* have 4"),
    (torch.zeros(2, 4), torch.ones(4), 0, r"must be \[tokens, layers, dim\]"),
    (torch.zeros(2, 3, 4), torch.zeros(4), 0, r"zero or non-finite norm"),
])
def test_bad_input_is_one_line_error(acts, vec, layer, match):
    with pytest.raises(PipelineError, match=match):
        project_tokens(acts, vec, layer)


def test_unit_has_norm_one():
    assert float(unit(torch.tensor([3.0, 4.0])).norm()) == pytest.approx(1.0)
