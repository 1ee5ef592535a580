"""Steering hooks on the demo family: additive, ablation, positions, per-row plans."""

import pytest
import torch

from trait_pipeline.config import VariantSpec
from trait_pipeline.errors import PipelineError
from trait_pipeline.generation import generate
from trait_pipeline.layers import component_module
from trait_pipeline.models import load_variant
from trait_pipeline.steering_ops import (
    LayerBest,
    RowSteering,
    SteeringTerm,
    ablate_direction,
    plan_orthogonal,
    plan_weighted,
    steer,
)

torch.set_num_threads(1)  # the test machine's cores are shared; threads contend badly

QUESTIONS = ["how is the project going ?", "what do you think about the weather ?",
             "tell me about the market .", "how does the team look this season ?"]


@pytest.fixture(scope="module")
def lm():
    return load_variant(VariantSpec("instruct", "demo:instruct", dtype="float32"), device="cpu")


@pytest.fixture(scope="module")
def direction(lm):
    torch.manual_seed(0)
    v = torch.randn(lm.model.config.hidden_size)
    return v / v.norm()


def _layer_out(lm, layer, terms=(), positions="all", text=QUESTIONS[0]):
    """Output of decoder block ``layer`` for one prompt, under ``terms``."""
    batch = lm.pad_batch(lm.encode([lm.format_prompt(text)]))
    seen = {}
    with steer(lm.model, list(terms), positions), torch.no_grad():
        # registered after the steering hook, so it sees the steered output
        h = component_module(lm.model, layer, "residual").register_forward_hook(
            lambda m, i, o: seen.setdefault("x", (o[0] if isinstance(o, tuple) else o).detach()))
        try:
            lm.model(**batch)
        finally:
            h.remove()
    return seen["x"]


def test_additive_term_shifts_every_position_by_coef_v(lm, direction):
    plain = _layer_out(lm, 10)
    steered = _layer_out(lm, 10, [SteeringTerm(10, "residual", direction, coef=5.0)])
    assert torch.allclose(steered - plain, (5.0 * direction).expand_as(plain), atol=1e-5)


def test_ablation_removes_the_direction(lm, direction):
    plain = _layer_out(lm, 10)
    out = _layer_out(lm, 10, [SteeringTerm(10, "residual", direction * 3.0, ablate=True)])
    assert (out @ direction).abs().max() < 1e-4 < (plain @ direction).abs().max()
    assert torch.allclose(out, ablate_direction(plain, direction), atol=1e-5)


def test_response_positions_leave_the_prompt_alone_but_the_last_token(lm, direction):
    plain = _layer_out(lm, 10)
    out = _layer_out(lm, 10, [SteeringTerm(10, "residual", direction, coef=5.0)], positions="response")
    assert torch.allclose(out[:, :-1], plain[:, :-1], atol=1e-6)  # prompt untouched
    assert torch.allclose(out[:, -1] - plain[:, -1], 5.0 * direction, atol=1e-5)  # first response token's input


def test_hooks_are_removed_after_the_block(lm, direction):
    mod = component_module(lm.model, 10, "residual")
    before = len(mod._forward_hooks)
    with steer(lm.model, [SteeringTerm(10, "residual", direction, coef=1.0)]):
        assert len(mod._forward_hooks) == before + 1
    assert len(mod._forward_hooks) == before
    with pytest.raises(PipelineError, match="steer_positions"), steer(lm.model, [], positions="prompt"):
        pass


def _configs(direction):
    return [[], [SteeringTerm(10, "residual", direction, coef=150.0)],
            [SteeringTerm(6, "residual", direction, coef=-150.0)],
            [SteeringTerm(14, "residual", direction, ablate=True)]]


@pytest.mark.parametrize("positions", ["all", "response"])
def test_batched_configs_equal_separate_runs(lm, direction, positions):
    """K configs in one generate (sub-batches of 3 rows cut across configs) == K runs (greedy)."""
    configs = _configs(direction)
    rows = [terms for terms in configs for _ in QUESTIONS]
    prompts = QUESTIONS * len(configs)
    batched = generate(lm, prompts, max_new_tokens=10, batch_size=3,
                       batch_context=RowSteering(lm.model, rows, positions))
    separate = []
    for terms in configs:
        with steer(lm.model, terms, positions):
            separate += generate(lm, QUESTIONS, max_new_tokens=10, batch_size=len(QUESTIONS))
    assert [g.response_ids for g in batched] == [g.response_ids for g in separate]
    # the configs really differ (otherwise the check above proves nothing)
    texts = [tuple(g.response_text for g in batched[k * 4:(k + 1) * 4]) for k in range(len(configs))]
    assert len(set(texts)) >= 3


def test_row_plan_out_of_range_is_an_error(lm):
    with pytest.raises(IndexError):
        RowSteering(lm.model, [[]] * 2)(0, 3)


def test_multi_layer_plans():
    best = [LayerBest(10, 8.0, 30.0), LayerBest(20, 4.0, 10.0), LayerBest(5, 2.0, -3.0)]
    assert plan_weighted(best, global_scale=2.0) == {10: 12.0, 20: 2.0}
    v = {10: torch.tensor([1.0, 0.0]), 20: torch.tensor([1.0, 1.0]), 5: torch.tensor([0.0, 1.0])}
    coefs, vecs = plan_orthogonal(best, v)
    assert coefs == {10: 3.0, 20: 3.0} and 5 not in vecs
    assert vecs[20].tolist() == [0.0, 1.0] and float(vecs[20] @ v[10]) == 0.0
    with pytest.raises(PipelineError, match="no layer has a positive"):
        plan_weighted([LayerBest(1, 1.0, -1.0)])
