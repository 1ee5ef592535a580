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
    _CallInfo,
    _PositionTracker,
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


def test_batched_configs_stay_aligned_when_out_of_memory_halves_the_batch(lm, direction, monkeypatch):
    """An OOM mid-sweep halves the sub-batch; each row keeps its own config (== separate runs)."""
    configs = _configs(direction)
    rows = [terms for terms in configs for _ in QUESTIONS]
    real, sizes = lm.model.generate, []

    def small_memory(*a, **k):  # a device that fits 3 rows at a time
        n = k["input_ids"].shape[0]
        sizes.append(n)
        if n > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **k)

    monkeypatch.setattr(lm.model, "generate", small_memory)
    batched = generate(lm, QUESTIONS * len(configs), max_new_tokens=10, batch_size=16,
                       batch_context=RowSteering(lm.model, rows))
    monkeypatch.undo()
    assert sizes == [16, 8, 4] + [2] * 8  # halved until it fits, then kept
    separate = []
    for terms in configs:
        with steer(lm.model, terms):
            separate += generate(lm, QUESTIONS, max_new_tokens=10, batch_size=len(QUESTIONS))
    assert [g.response_ids for g in batched] == [g.response_ids for g in separate]


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


# --- positions="response" across generations (one steer() block, several prefills) -----------
PROMPTS = ["how is it ?", "what do you think about the weather and the market this season ?",
           "tell me about the project ."]


def _calls(tracker, info, calls):
    """Feed (seq_len, cached_len, uses_cache) calls; return the response columns of each."""
    out = []
    for seq_len, past, cached in calls:
        if info is not None:
            info.serial += 1
            info.past, info.cached = past, cached
        first, width = tracker.columns(seq_len)
        out.append([c for c in range(first, first + seq_len) if c >= width - 1])
    return out


def test_a_prefill_after_decode_steps_starts_a_new_generation():
    # generation 1: prompt of 5, two decode steps; generation 2: prompt of 3, one decode step
    calls = [(5, 0, True), (1, 5, True), (1, 6, True), (3, 0, True), (1, 3, True)]
    expected = [[4], [5], [6], [2], [3]]
    info = _CallInfo()
    assert _calls(_PositionTracker(info), info, calls) == expected
    # without the model's pre-hook (a sub-module called directly), counting gives the same
    assert _calls(_PositionTracker(None), None, calls) == expected
    # prefill-only generations (max_new_tokens=1), the second one column wider than the first
    info = _CallInfo()
    assert _calls(_PositionTracker(info), info, [(4, 0, True), (5, 0, True)]) == [[3], [4]]


def test_generation_without_a_cache_recomputes_from_column_0():
    info = _CallInfo()
    calls = [(4, 0, False), (5, 0, False), (6, 0, False)]
    assert _calls(_PositionTracker(info), info, calls) == [[3], [3, 4], [3, 4, 5]]


def _steered_generation(lm, prompt_lists, terms, positions):
    """Greedy outputs and every forward call's steered layer-8 output, one steer() block per list."""
    seen = []
    outs = []
    for prompts in prompt_lists:
        with steer(lm.model, terms, positions):
            # registered after the steering hook, so it sees the steered output
            h = component_module(lm.model, 8, "residual").register_forward_hook(
                lambda m, i, o: seen.append((o[0] if isinstance(o, tuple) else o).detach().clone()))
            try:
                outs += generate(lm, prompts, max_new_tokens=6, batch_size=1)
            finally:
                h.remove()
    return outs, seen


@pytest.mark.parametrize("positions", ["all", "response"])
def test_steer_over_sub_batches_equals_per_prompt_runs(lm, direction, positions):
    """One steer() block over generate's sub-batches == each prompt generated alone (issue 19)."""
    terms = [SteeringTerm(8, "residual", direction, coef=150.0)]
    together, acts_together = _steered_generation(lm, [PROMPTS], terms, positions)
    alone, acts_alone = _steered_generation(lm, [[p] for p in PROMPTS], terms, positions)
    assert [g.response_ids for g in together] == [g.response_ids for g in alone]
    assert len(acts_together) == len(acts_alone)
    for k, (a, b) in enumerate(zip(acts_together, acts_alone)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5), f"forward call {k}"
    plain = generate(lm, PROMPTS, max_new_tokens=6, batch_size=1)
    assert [g.response_ids for g in together] != [g.response_ids for g in plain]  # steering bites
