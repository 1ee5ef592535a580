"""Massive activations: the few hidden dimensions whose magnitude dwarfs the others.

Some models carry huge values in a handful of residual dimensions (often at the first
token); they dominate raw projections and norms. The calibration runs a prompt set through
a variant, takes the mean ``|h[d]|`` over every token at every layer, and applies a
recorded :class:`Criterion`:

* per layer, the ``top_k`` dimensions by mean ``|h|`` whose mean is at least ``min_ratio``
  times the median dimension's mean at that layer (outsized, not merely the largest);
* a dimension is *massive* when it is in that list at ``min_layers`` layers or more.

>>> import torch
>>> mags = torch.ones(4, 6); mags[:, 2] = 50.0          # 4 layers, 6 dims, dim 2 huge
>>> found = find_massive(mags, Criterion(top_k=2, min_layers=3, min_ratio=5.0))
>>> found["dims"], found["top_dims_by_layer"]["0"]
([2], [2])

Projections drop them with ``project_tokens(..., exclude_dims=dims)``
(:mod:`trait_pipeline.projection`); ``infer clean=massive`` does so and records it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import PipelineError
from ..jsonio import read_json
from ..layout import SCHEMA_VERSION, Layout

CLEAN_MODES = ("none", "massive")


@dataclass(frozen=True)
class Criterion:
    """What counts as massive (recorded in every calibration file)."""

    top_k: int = 5  # candidates per layer, by mean |h| over tokens
    min_layers: int = 3  # a dim must be a candidate at this many layers
    min_ratio: float = 10.0  # ... and each candidate's mean |h| >= min_ratio x the layer's median

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.min_layers < 1 or self.min_ratio < 0:
            raise PipelineError(
                f"bad massive-dims criterion {asdict(self)}: expected top_k >= 1, "
                "min_layers >= 1, min_ratio >= 0")

    def describe(self) -> str:
        return (f"top {self.top_k} dims by mean |h| over tokens with mean >= {self.min_ratio:g} x "
                f"the layer's median, present at >= {self.min_layers} layers")


def mean_abs_by_layer(acts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean ``|h[d]|`` over every token of every sequence: ``[n_layers, dim]`` (fp32).

    ``acts``: one ``[n_tokens, n_layers, dim]`` tensor per sequence.
    """
    total, count = None, 0
    for a in acts:
        s = a.float().abs().sum(dim=0)
        total = s if total is None else total + s
        count += a.shape[0]
    if total is None or count == 0:
        raise PipelineError("massive-dims calibration got no tokens")
    return total / count


def find_massive(mags: torch.Tensor, criterion: Criterion) -> dict:
    """Apply ``criterion`` to ``mags`` ``[n_layers, dim]`` (see the module docstring)."""
    n_layers, dim = mags.shape
    k = min(criterion.top_k, dim)
    medians = mags.median(dim=1).values
    by_layer: dict[str, list[int]] = {}
    counts: dict[int, int] = {}
    for la in range(n_layers):
        vals, idx = mags[la].topk(k)
        floor = criterion.min_ratio * float(medians[la])
        keep = [int(i) for v, i in zip(vals.tolist(), idx.tolist()) if v >= floor]
        by_layer[str(la)] = keep
        for d in keep:
            counts[d] = counts.get(d, 0) + 1
    dims = sorted(d for d, n in counts.items() if n >= criterion.min_layers)
    top_any = mags.topk(k, dim=1)
    return {
        "dims": dims,
        "top_dims_by_layer": by_layer,
        "layers_per_dim": {str(d): counts[d] for d in sorted(counts)},
        # context for a reader: what the largest dims look like even when none qualifies
        "largest_by_layer": {
            str(la): [{"dim": int(i), "mean_abs": float(v),
                       "ratio_to_median": float(v) / max(float(medians[la]), 1e-12)}
                      for v, i in zip(top_any.values[la].tolist(), top_any.indices[la].tolist())]
            for la in range(n_layers)},
        "median_mean_abs_by_layer": [float(m) for m in medians],
    }


def calibrate(lm, prompt_ids: Sequence[list[int]], criterion: Criterion,
              batch_size: int = 8) -> dict:
    """Run the prompts through ``lm`` (prompt tokens, every layer) and find the massive dims."""
    from ..token_capture import capture_replay

    acts = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = list(prompt_ids[start:start + batch_size])
        for seq in capture_replay(lm, chunk, [[] for _ in chunk], ["residual"]):
            acts.append(seq.prompt["residual"])
    mags = mean_abs_by_layer(acts)
    found = find_massive(mags, criterion)
    return {**found, "n_prompts": len(prompt_ids), "n_tokens": sum(a.shape[0] for a in acts),
            "n_layers": int(mags.shape[0]), "hidden_dim": int(mags.shape[1]),
            "mean_abs_by_layer": [[round(float(x), 6) for x in row] for row in mags]}


def calibration_record(found: dict, criterion: Criterion, *, experiment: str, variant: str,
                       model: str, lora: str | None, prompt_set: str, component: str = "residual",
                       layer_convention: str = "") -> dict:
    """The JSON written to ``inference/{variant}/massive_activations/{prompt_set}.json``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "criterion": {**asdict(criterion), "description": criterion.describe()},
        "metadata": {"experiment": experiment, "model_variant": variant, "model": model,
                     "lora": lora, "prompt_set": prompt_set, "component": component,
                     "tokens": "prompt tokens (chat template applied when the variant uses one)",
                     "layer_convention": layer_convention,
                     "calibration_date": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        **found,
    }


def load_calibration(lay: Layout, variant: str, prompt_set: str) -> tuple[dict, Path]:
    """A variant's calibration file, or a PipelineError saying how to make it."""
    path = lay.massive_activations_path(variant, prompt_set)
    if not path.is_file():
        raise PipelineError(
            f"clean=massive needs a calibration of {variant!r} on {prompt_set!r} ({path} is "
            f"missing); run: python -m trait_pipeline.infer model_variant={variant} "
            f"massive.calibrate=true massive.prompt_set={prompt_set}")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("dims"), list):
        raise PipelineError(f"{path} is not a massive-dims calibration (no 'dims' list)")
    return data, path


def find_calibration(lay: Layout, variant: str) -> tuple[dict, Path] | None:
    """The variant's calibration when exactly one prompt set was used, else the newest."""
    folder = lay.massive_activations_dir(variant)
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    for path in reversed(files):
        try:
            return load_calibration(lay, variant, path.stem)
        except PipelineError:
            continue
    return None


def check_clean(mode: str) -> str:
    if mode not in CLEAN_MODES:
        raise PipelineError(f"bad clean {mode!r}: expected one of: {', '.join(CLEAN_MODES)}")
    return mode


def massive_record(acts_by_phase: dict[str, torch.Tensor], layer: int, vector: torch.Tensor,
                   dims: list[int], calibration: str | None, criterion: dict | None) -> dict:
    """What a projection file keeps about massive dims, enough for a reader to clean or
    un-clean it: the dims, the unit vector's components there and each token's values."""
    from ..projection import unit

    v = unit(vector)
    return {
        "dims": list(dims), "calibration": calibration, "criterion": criterion,
        "vec_components": {str(d): float(v[d]) for d in dims},
        "values": {ph: {str(d): a[:, layer, d].float().tolist() for d in dims}
                   for ph, a in acts_by_phase.items()},
    }
