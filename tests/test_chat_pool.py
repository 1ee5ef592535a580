"""The chat's model pool: first-use loading, at most N resident (least recently used and
idle goes first), one generation per model with queue positions, memory per model."""

import threading
import time
from types import SimpleNamespace

import pytest
from torch import nn

from trait_pipeline.chat.pool import ModelPool, model_bytes
from trait_pipeline.errors import PipelineError


def loader(log):
    def load(spec):
        log.append(spec.name)
        return SimpleNamespace(model=nn.Linear(10, 10))  # 110 float32 parameters
    return load


def spec(name):
    return SimpleNamespace(name=name, model=f"/nonexistent/{name}", lora=None)


def test_loads_on_first_use_and_keeps_at_most_n():
    log = []
    pool = ModelPool(max_resident=2, loader=loader(log))
    for name in ("a", "b", "a", "c"):
        t = pool.enqueue(("x", name))
        assert pool.wait_turn(t, 1)
        pool.model(t, spec(name))
        pool.release(t)
    assert log == ["a", "b", "c"]  # "a" was reused; "c" evicted "b", the least recently used
    res = pool.status()["resident"]
    assert [r["variant"] for r in res] == ["a", "c"]
    assert all(r["bytes"] == 110 * 4 for r in res)
    assert model_bytes(nn.Linear(10, 10)) == 440


def test_one_generation_per_model_and_queue_positions():
    pool = ModelPool(max_resident=1, loader=loader([]))
    first, second, third = (pool.enqueue(("x", "a")) for _ in range(3))
    other = pool.enqueue(("x", "b"))
    assert [pool.position(t) for t in (first, second, third, other)] == [0, 1, 2, 0]
    assert not pool.wait_turn(second, 0.05)
    pool.release(first)
    assert pool.wait_turn(second, 0.05) and pool.position(third) == 1
    third.cancelled.set()
    assert not pool.wait_turn(third, 0.05)
    pool.release(third)
    assert pool.status()["queues"] == {"x/a": 1, "x/b": 1}


def test_a_busy_model_is_not_evicted_until_it_is_idle():
    pool = ModelPool(max_resident=1, loader=loader([]))
    busy = pool.enqueue(("x", "a"))
    pool.model(busy, spec("a"))
    waiting = pool.enqueue(("x", "b"))
    got = []
    t = threading.Thread(target=lambda: got.append(pool.model(waiting, spec("b"), got.append)))
    t.start()
    time.sleep(0.3)
    assert [r["variant"] for r in pool.status()["resident"]] == ["a"]
    pool.release(busy)
    t.join(5)
    assert [r["variant"] for r in pool.status()["resident"]] == ["b"]
    assert any("waiting for a model slot" in str(m) for m in got)


def test_bad_size():
    with pytest.raises(PipelineError, match="max_resident"):
        ModelPool(max_resident=0)
