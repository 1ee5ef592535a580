"""Per-token projections of captured activations onto a trait vector, plus the norms
the dashboard needs to normalise them (cosine = projection / token norm).

>>> import torch
>>> acts = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])        # 2 tokens, 1 layer, dim 2
>>> p = project_tokens(acts, torch.tensor([0.0, 2.0]), layer=0)
>>> p.projections, p.token_norms, p.activation_norms
([4.0, 0.0], [5.0, 1.0], [3.0])
>>> project_tokens(acts, torch.tensor([0.0, 2.0]), layer=0, baseline=1.0).projections
[3.0, -1.0]
>>> project_tokens(acts, torch.tensor([0.0, 2.0]), layer=0, exclude_dims=[1]).projections
[0.0, 0.0]

``exclude_dims`` drops hidden dimensions (the massive activations of
:mod:`trait_pipeline.monitoring.massive_dims`) from both the projection and the token norm:
``p - sum_d h[d] v[d]/|v|`` and ``sqrt(|h|^2 - sum_d h[d]^2)``; the vector is not renormalised.

All arithmetic is fp32 whatever the capture dtype. The projection is onto the *unit*
vector, so its scale is that of the activations, not of the vector's norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import PipelineError


@dataclass(frozen=True)
class TokenProjection:
    """One phase (prompt or response) of one sequence."""

    projections: list[float]  # per token: h_L . v/|v| (minus the baseline when centred)
    token_norms: list[float]  # per token: |h_L| at the vector's layer
    activation_norms: list[float]  # per layer: mean over tokens of |h_l|; [] without tokens


def unit(vector: torch.Tensor) -> torch.Tensor:
    v = vector.detach().float().flatten()
    norm = v.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise PipelineError("the trait vector has zero or non-finite norm; it cannot be projected on")
    return v / norm


def project_tokens(
    acts: torch.Tensor, vector: torch.Tensor, layer: int, baseline: float | None = None,
    exclude_dims: list[int] | None = None,
) -> TokenProjection:
    """Project ``acts`` ``[n_tokens, n_layers, dim]`` at ``layer`` onto ``vector`` ``[dim]``."""
    if acts.ndim != 3:
        raise PipelineError(f"activations must be [tokens, layers, dim], got {tuple(acts.shape)}")
    n_tok, n_layers, dim = acts.shape
    if not 0 <= layer < n_layers:
        raise PipelineError(f"layer {layer} out of range: the capture has layers 0..{n_layers - 1}")
    if vector.numel() != dim:
        raise PipelineError(
            f"vector has dimension {vector.numel()} but the activations have {dim}: "
            "was it extracted from another model?"
        )
    at_layer = acts[:, layer].float()
    if exclude_dims:
        bad = [d for d in exclude_dims if not 0 <= int(d) < dim]
        if bad:
            raise PipelineError(f"excluded dimension {bad[0]} out of range: hidden size is {dim}")
        at_layer = at_layer.clone()
        at_layer[:, [int(d) for d in exclude_dims]] = 0.0
    proj = at_layer @ unit(vector)
    if baseline is not None:
        proj = proj - float(baseline)
    norms_by_layer = acts.float().norm(dim=-1)  # [n_tokens, n_layers]
    return TokenProjection(
        projections=proj.tolist(),
        token_norms=at_layer.norm(dim=-1).tolist(),
        activation_norms=norms_by_layer.mean(dim=0).tolist() if n_tok else [],
    )


def mean(values: list[float]) -> float | None:
    """The mean of a list, or None when it is empty (an empty response)."""
    return sum(values) / len(values) if values else None
