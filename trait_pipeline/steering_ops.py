"""Steering operators: forward hooks that add ``coef·v`` to, or project ``v`` out of, a
(layer, component) output while a model generates.

One :class:`SteeringTerm` is one operation at one site. A *row plan* gives every row of a
prompt list its own list of terms, so many (layer, coef) configs run in one batched
``generate`` call:

>>> # terms = [[SteeringTerm(10, "residual", v, coef=4.0)], [SteeringTerm(20, "residual", v, 8.0)]]
>>> # rows = [t for t in terms for _ in questions]            # config-major
>>> # outs = generate(lm, questions * 2, batch_context=RowSteering(lm.model, rows))

``RowSteering(start, end)`` is the ``batch_context`` hook of :func:`generation.generate`:
it is entered around each sub-batch with that sub-batch's row range in the *whole* list,
so row ``i`` of the sub-batch gets the terms of row ``start + i`` however the list is split.

Positions: ``all`` steers every position of every forward pass (prompt, padding, each
decode step). ``response`` steers only the positions that produce response tokens: the
last prompt token and every generated token. The last prompt token is included on purpose,
else the first response token would be unsteered (an off-by-one other tools have shipped).
Positions are tracked per generation from what the model's forward call says about its KV
cache (a pre-hook reads the cached length), not by absolute indices into the input: with a
cache each decode step is a length-1 input, and one ``steer()`` block may span several
generations of different prompt widths (sub-batches), each tracked from its own prefill.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .errors import PipelineError
from .layers import component_module

STEER_POSITIONS = ("all", "response")
MULTI_LAYER_MODES = ("weighted", "orthogonal")


@dataclass(frozen=True)
class SteeringTerm:
    """One operation at one site: add ``coef·vector``, or (``ablate``) project it out.

    >>> t = SteeringTerm(10, "residual", torch.ones(4), coef=2.0)
    >>> t.delta().tolist()
    [2.0, 2.0, 2.0, 2.0]
    """

    layer: int
    component: str
    vector: torch.Tensor
    coef: float = 1.0
    ablate: bool = False

    @property
    def site(self) -> tuple[int, str]:
        return (int(self.layer), self.component)

    def delta(self) -> torch.Tensor:
        """The additive shift, in float32 (cast to the activations' dtype at the hook)."""
        return float(self.coef) * self.vector.float()

    def unit(self) -> torch.Tensor:
        v = self.vector.float()
        norm = v.norm()
        if norm == 0:
            raise PipelineError(f"cannot ablate a zero vector (layer {self.layer})")
        return v / norm


def ablate_direction(x: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """``x − (x·û)û`` along the last dimension; ``unit`` broadcasts (rows with û = 0 are untouched).

    >>> x = torch.tensor([[3.0, 4.0]])
    >>> ablate_direction(x, torch.tensor([1.0, 0.0])).tolist()
    [[0.0, 4.0]]
    """
    return x - (x * unit).sum(-1, keepdim=True) * unit


@dataclass
class _SiteOps:
    """What one hook does to a batch: per-row deltas and per-row ablation directions."""

    delta: torch.Tensor | None  # [rows, d] float32 (rows may be 1: broadcast)
    units: list[torch.Tensor]  # each [rows, d] float32; zero rows are untouched

    def __post_init__(self) -> None:
        self._placed: dict = {}

    def placed(self, device: torch.device, dtype: torch.dtype):
        """(delta in the activations' dtype, units in float32) on ``device``, as [rows, 1, d].

        Cached: a hook runs once per decode step and the copies would dominate otherwise.
        """
        key = (device, dtype)
        if key not in self._placed:
            delta = None if self.delta is None else self.delta.to(device).unsqueeze(1).to(dtype)
            units = [u.to(device).unsqueeze(1) for u in self.units]
            self._placed[key] = (delta, units)
        return self._placed[key]


@dataclass
class _CallInfo:
    """What the model's own forward call says about the columns it feeds (set by a pre-hook).

    ``past`` is the number of tokens already in the KV cache, ``cached`` whether a cache is in
    use at all. ``serial`` counts forward calls, so a site hook knows the info is for its call.
    """

    serial: int = 0
    past: int = 0
    cached: bool = False


class _PositionTracker:
    """Which columns of the current forward call produce response tokens.

    A generation is a prefill over the padded prompt (width ``P``), then length-1 decode steps
    at columns ``P, P+1, ...``. The tracker starts a new generation whenever the KV cache is
    empty at a call that uses one: one ``steer()`` block often spans several generations
    (``generate`` splits a prompt list into sub-batches), and each has its own ``P``.
    Without a cache, every step recomputes the whole sequence from column 0; a call exactly one
    token longer than the previous one is read as such a recompute of the same generation.
    When the model's pre-hook did not see the call (a sub-module called directly), columns
    are counted instead, and a multi-token call after decode steps starts a new generation.
    """

    def __init__(self, info: _CallInfo | None = None) -> None:
        self.info = info
        self._serial = -1
        self.prompt_width: int | None = None
        self.seen = 0
        self.decoding = False

    def _start(self, seq_len: int) -> int:
        self.prompt_width = seq_len
        self.decoding = False
        return 0

    def columns(self, seq_len: int) -> tuple[int, int]:
        """(first column, prompt width) of the call; updates the state."""
        info = self.info
        if info is not None and info.serial != self._serial:
            self._serial = info.serial
            if info.past > 0 and self.prompt_width is not None:
                first = info.past
            elif info.cached or self.prompt_width is None or seq_len != self.seen + 1:
                first = self._start(seq_len)
            else:  # no cache: the same generation recomputed one token longer
                first = 0
        elif self.prompt_width is None or (seq_len > 1 and self.decoding):
            first = self._start(seq_len)
        elif seq_len == 1:
            first = self.seen
            self.decoding = True
        else:
            first = 0
        self.seen = first + seq_len
        return first, self.prompt_width


def _past_length(kwargs: dict) -> tuple[int, bool]:
    """(tokens already cached, whether a cache is used) from a causal LM's forward kwargs.

    transformers v5 names the cache ``cache``; older versions ``past_key_values``.
    """
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is None:
        return 0, bool(kwargs.get("use_cache"))
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length()), True
    try:  # legacy tuple of (key, value) per layer: [batch, heads, seq, dim]
        return int(cache[0][0].shape[-2]), True
    except (IndexError, TypeError, AttributeError):
        return 0, True


def _call_info_hook(info: _CallInfo):
    def pre_hook(_module, _args, kwargs):
        info.serial += 1
        info.past, info.cached = _past_length(kwargs)

    return pre_hook


def _apply(out: torch.Tensor, ops: _SiteOps, positions: str, tracker: _PositionTracker) -> torch.Tensor:
    dtype, device = out.dtype, out.device
    if positions == "response":
        first, width = tracker.columns(out.shape[1])
        cols = torch.arange(first, first + out.shape[1], device=device)
        mask = (cols >= width - 1).to(dtype).view(1, -1, 1)
        if not bool(mask.any()):
            return out
    else:
        mask = None
    delta, units = ops.placed(device, dtype)
    new = out
    for u in units:
        ablated = ablate_direction(new.float(), u).to(dtype)
        new = ablated if mask is None else new + (ablated - new) * mask
    if delta is not None:
        new = new + (delta if mask is None else delta * mask)
    return new


def _hook(ops: _SiteOps, positions: str, info: _CallInfo | None = None):
    tracker = _PositionTracker(info)

    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (_apply(output[0], ops, positions, tracker), *output[1:])
        return _apply(output, ops, positions, tracker)

    return hook


def _check_positions(positions: str) -> str:
    if positions not in STEER_POSITIONS:
        raise PipelineError(
            f"bad steer_positions {positions!r}; expected one of: {', '.join(STEER_POSITIONS)}"
        )
    return positions


def _site_ops(rows: Sequence[Sequence[SteeringTerm]]) -> dict[tuple[int, str], _SiteOps]:
    """Stack the terms of each row into per-site [rows, d] tensors."""
    n = len(rows)
    adds: dict[tuple[int, str], torch.Tensor] = {}
    units: dict[tuple[int, str], list[torch.Tensor]] = defaultdict(list)
    for i, terms in enumerate(rows):
        slot: dict[tuple[int, str], int] = defaultdict(int)  # nth ablation of this row at a site
        for t in terms:
            d = t.vector.numel()
            if t.ablate:
                k = slot[t.site]
                slot[t.site] += 1
                while len(units[t.site]) <= k:
                    units[t.site].append(torch.zeros(n, d))
                units[t.site][k][i] = t.unit()
            else:
                if t.site not in adds:
                    adds[t.site] = torch.zeros(n, d)
                adds[t.site][i] += t.delta()
    return {
        site: _SiteOps(delta=adds.get(site), units=list(units.get(site, [])))
        for site in set(adds) | set(units)
    }


@contextmanager
def _hooks(model: nn.Module, ops: dict[tuple[int, str], _SiteOps], positions: str) -> Iterator[None]:
    handles = []
    info = _CallInfo() if positions == "response" else None
    try:
        if info is not None:
            handles.append(model.register_forward_pre_hook(_call_info_hook(info), with_kwargs=True))
        for (layer, component), site_ops in sorted(ops.items()):
            mod = component_module(model, layer, component)
            handles.append(mod.register_forward_hook(_hook(site_ops, positions, info)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def steer(model: nn.Module, terms: Sequence[SteeringTerm], positions: str = "all") -> Iterator[None]:
    """Apply the same terms to every row of whatever batch runs inside the block.

    >>> # with steer(lm.model, [SteeringTerm(10, "residual", v, coef=4.0)]):
    >>> #     outs = generate(lm, questions)
    """
    _check_positions(positions)
    with _hooks(model, _site_ops([list(terms)]), positions):
        yield


class RowSteering:
    """Per-row steering for :func:`generation.generate`'s ``batch_context``.

    ``rows[i]`` lists the terms of prompt ``i`` of the whole list (empty = unsteered).
    Calling it with a sub-batch's ``(start, end)`` returns a context manager that steers
    those rows only, in sub-batch order.
    """

    def __init__(
        self, model: nn.Module, rows: Sequence[Sequence[SteeringTerm]], positions: str = "all"
    ) -> None:
        self.model = model
        self.rows = [list(r) for r in rows]
        self.positions = _check_positions(positions)

    def __call__(self, start: int, end: int):
        if not 0 <= start <= end <= len(self.rows):
            raise IndexError(f"rows {start}:{end} outside the plan of {len(self.rows)} rows")
        return _hooks(self.model, _site_ops(self.rows[start:end]), self.positions)


# --- multi-layer plans ------------------------------------------------------------------


@dataclass(frozen=True)
class LayerBest:
    """The best coherent single-layer run of a layer: its coefficient and delta over baseline."""

    layer: int
    coef: float
    delta: float


def plan_weighted(best: Sequence[LayerBest], global_scale: float = 1.0) -> dict[int, float]:
    """Coefficients ∝ each layer's steering delta: ``scale · coef_ℓ · delta_ℓ / Σ delta``.

    Only layers that moved the trait up (delta > 0) take part.

    >>> plan_weighted([LayerBest(10, 8.0, 30.0), LayerBest(20, 4.0, 10.0), LayerBest(5, 2.0, -3.0)])
    {10: 6.0, 20: 1.0}
    """
    active = [b for b in best if b.delta > 0]
    if not active:
        raise PipelineError("multi_layer=weighted: no layer has a positive coherent delta to weight by")
    total = sum(b.delta for b in active)
    return {b.layer: global_scale * b.coef * b.delta / total for b in active}


def plan_orthogonal(
    best: Sequence[LayerBest], vectors: dict[int, torch.Tensor], global_scale: float = 1.0
) -> tuple[dict[int, float], dict[int, torch.Tensor]]:
    """A uniform coefficient ``scale · mean(coef)/n`` per active layer, and each layer's vector
    with the preceding active layer's original vector projected out (one step, not renormalised),
    so consecutive layers do not push the same direction twice.

    >>> b = [LayerBest(1, 4.0, 5.0), LayerBest(2, 2.0, 1.0)]
    >>> coefs, vecs = plan_orthogonal(b, {1: torch.tensor([1.0, 0.0]), 2: torch.tensor([1.0, 1.0])})
    >>> coefs, vecs[2].tolist()
    ({1: 1.5, 2: 1.5}, [0.0, 1.0])
    """
    active = sorted((b for b in best if b.delta > 0), key=lambda b: b.layer)
    if not active:
        raise PipelineError("multi_layer=orthogonal: no layer has a positive coherent delta")
    coef = global_scale * sum(b.coef for b in active) / len(active) / len(active)
    out: dict[int, torch.Tensor] = {}
    prev: torch.Tensor | None = None
    for b in active:
        v = vectors[b.layer].float()
        if prev is not None:
            u = prev / prev.norm().clamp_min(1e-12)
            out[b.layer] = v - (v @ u) * u
        else:
            out[b.layer] = v.clone()
        prev = v
    return {b.layer: coef for b in active}, out
