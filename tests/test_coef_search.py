"""Adaptive coefficient search: the walk, momentum, lockstep layers, outcomes."""

import pytest

from trait_pipeline.coef_search import (
    STATUS_NO_COHERENT_STEP,
    SearchParams,
    next_coef,
    round_coef,
    search,
)
from trait_pipeline.errors import PipelineError


def fake_model(limit):
    """Trait grows with the coefficient; coherence breaks above ``limit[layer]``."""
    calls = []

    def evaluate(configs):
        calls.append(list(configs))
        return [(min(100.0, 5.0 * c), 90.0 if c <= limit[la] else 40.0) for la, c in configs]

    return evaluate, calls


def test_walk_goes_up_while_coherent_and_down_after():
    evaluate, _ = fake_model({12: 10.5})
    walk = search({12: 10.0}, SearchParams(steps=4, momentum=0.0), evaluate)[12]
    assert [s.coef for s in walk.steps] == [7.0, 9.1, 11.83, 10.06]
    assert walk.best.coef == 10.06 and walk.status == "ok"  # the highest coherent trait
    assert walk.to_dict()["best_coef"] == 10.06


def test_momentum_smooths_the_direction():
    p = SearchParams(momentum=0.5, min_coherence=75)
    c, v = next_coef(10.0, 1.0, 80.0, p)  # velocity 0.5*1 + 0.5*1.3
    assert v == pytest.approx(1.15) and c == 11.5
    c, v = next_coef(c, v, 10.0, p)  # then 0.5*1.15 + 0.5*0.85
    assert v == pytest.approx(1.0) and c == 11.5
    assert next_coef(10.0, 1.0, None, SearchParams(momentum=0.0))[0] == 8.5  # None = incoherent


def test_layers_move_in_lockstep_one_call_per_step():
    evaluate, calls = fake_model({5: 100.0, 9: 1.0})
    walks = search({5: 10.0, 9: 20.0}, SearchParams(steps=3), evaluate)
    assert len(calls) == 3 and all(len(c) == 2 for c in calls)
    assert walks[5].steps[1].coef > walks[5].steps[0].coef  # coherent: up
    assert walks[9].steps[1].coef < walks[9].steps[0].coef  # incoherent: down


def test_no_coherent_step_is_reported_not_hidden():
    evaluate, _ = fake_model({3: -1.0})
    walk = search({3: 10.0}, SearchParams(steps=3), evaluate)[3]
    assert walk.status == STATUS_NO_COHERENT_STEP and walk.best is None
    assert "NO COHERENT STEP" in walk.describe() and "start_mult" in walk.describe()
    assert walk.most_coherent is not None


def test_walk_is_deterministic_so_a_rerun_replays_it():
    a = search({1: 33.3}, SearchParams(), fake_model({1: 30.0})[0])[1]
    b = search({1: 33.3}, SearchParams(), fake_model({1: 30.0})[0])[1]
    assert [s.coef for s in a.steps] == [s.coef for s in b.steps]
    assert round_coef(84.3749) == 84.37


def test_negative_base_searches_downwards():
    evaluate = lambda cfgs: [(50.0 + c, 90.0) for _, c in cfgs]
    walk = search({2: -10.0}, SearchParams(steps=2, momentum=0.0), evaluate)[2]
    assert walk.steps[0].coef == -7.0 and walk.best.coef == -9.1  # lowest trait wins


@pytest.mark.parametrize("bad", [{"steps": 0}, {"up_mult": 0}, {"momentum": 1.0}])
def test_bad_params_are_one_line_errors(bad):
    with pytest.raises(PipelineError, match="bad search"):
        SearchParams(**bad)


def test_evaluate_must_answer_every_config():
    with pytest.raises(RuntimeError, match="outcomes"):
        search({1: 1.0}, SearchParams(steps=1), lambda cfgs: [])


def test_saturated_baseline_is_said_in_one_line_and_not_searched():
    from trait_pipeline.coef_search import search_directions

    calls = []

    def evaluate(cfgs):
        calls.append(list(cfgs))
        return [(100.0 + c, 90.0) for _, c in cfgs]

    walk = search({10: 20.0}, SearchParams(), evaluate, baseline=100.0)[10]
    assert calls == [] and walk.status == "saturated" and walk.best is None
    assert walk.describe() == "layer 10: baseline 100: no headroom upward; try search.direction=down"
    assert walk.to_dict()["best_coef"] is None and walk.to_dict()["direction"] == "up"
    both = search_directions({10: 20.0}, SearchParams(direction="both", steps=2), evaluate, baseline=100.0)
    assert both[(10, "up")].status == "saturated" and not both[(10, "up")].steps
    down = both[(10, "down")]
    assert [c for _, c in calls[0]] == [-14.0] and down.best.coef < 0 and down.status == "ok"


def test_a_walk_that_moves_nothing_has_no_best():
    walk = search({3: 10.0}, SearchParams(steps=3), lambda cfgs: [(60.0, 90.0) for _ in cfgs],
                  baseline=60.0)[3]
    assert walk.best is None and walk.status == "no_effect" and "NO EFFECT" in walk.describe()


def test_direction_is_checked():
    with pytest.raises(PipelineError, match="search.direction 'sideways'"):
        SearchParams(direction="sideways")
