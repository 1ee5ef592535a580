"""steering-vectors' mean aggregator on activations from a safetensors file (run in the peer venv).

    bench/.venv-peers/bin/python bench/peer_mean_aggregator.py IN.safetensors OUT.safetensors

IN holds ``pos`` and ``neg`` (``[n, d]`` or ``[n, n_layers, d]``, paired rows); OUT gets
``vector`` (``[d]`` or ``[n_layers, d]``) = ``mean_aggregator()(pos, neg)`` per layer, as the
library computes it. Used by ``tests/test_peer_crosscheck.py`` and
``bench_extraction_math.py`` so the cross-check runs on exactly the project's activations.
"""

from __future__ import annotations

import sys

import torch
from safetensors.torch import load_file, save_file
from steering_vectors import mean_aggregator


def aggregate(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    agg = mean_aggregator()
    if pos.ndim == 2:
        return agg(pos, neg)
    return torch.stack([agg(pos[:, la], neg[:, la]) for la in range(pos.shape[1])])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    t = load_file(argv[0])
    save_file({"vector": aggregate(t["pos"], t["neg"]).contiguous()}, argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
