"""Cross-check: our mean_diff = steering-vectors' mean aggregator on the same activations.

steering-vectors pins transformers < 5, so it cannot live in the project env. The check
imports it in-process when it is importable; otherwise it runs the library in the peer
venv that ``bench/setup_peers.sh`` makes (``bench/.venv-peers``), through
``bench/peer_mean_aggregator.py``, on the activations this test captured and saved
(safetensors); with neither it skips, saying why. The float64 reference check runs always.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trait_pipeline.capture import record
from trait_pipeline.config import VariantSpec
from trait_pipeline.demo_family import RECIPE
from trait_pipeline.models import load_variant
from trait_pipeline.vector_methods import mean_diff

REPO = Path(__file__).resolve().parent.parent

PEER_PYTHON = REPO / "bench" / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = REPO / "bench" / "peer_mean_aggregator.py"
TRAIT_DIR = REPO / "datasets" / "traits" / "demo" / "optimism"
MIN_COSINE = 0.999999
N_PAIRS = 24


@pytest.fixture(scope="module")
def activations(demo_family):
    """Paired ``pos``/``neg`` [n, n_layers, d]: demo base, last prompt token, every block."""
    lm = load_variant(VariantSpec("base", "demo:base", use_chat_template=False, dtype="float32"),
                      device="cpu")
    out = {}
    for side, name in (("pos", "positive.txt"), ("neg", "negative.txt")):
        prompts = [s for s in (TRAIT_DIR / name).read_text().splitlines() if s.strip()][:N_PAIRS]
        batch = lm.pad_batch(lm.encode(prompts))  # left padding: the last column is each last token
        with torch.no_grad(), record(lm.model, range(lm.n_layers)) as rec:
            lm.model(**batch)
        out[side] = torch.stack([rec.calls[("residual", la)][0][:, -1] for la in range(lm.n_layers)], 1)
    assert out["pos"].shape == out["neg"].shape == (N_PAIRS, lm.n_layers, RECIPE.hidden_size)
    return out


def _ours(acts) -> torch.Tensor:
    return torch.stack([mean_diff(acts["pos"][:, la], acts["neg"][:, la]).vector
                        for la in range(acts["pos"].shape[1])])


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def _theirs(acts, tmp_path) -> torch.Tensor:
    if importlib.util.find_spec("steering_vectors") is not None:
        from steering_vectors import mean_aggregator

        agg = mean_aggregator()
        return torch.stack([agg(acts["pos"][:, la], acts["neg"][:, la])
                            for la in range(acts["pos"].shape[1])])
    if not PEER_PYTHON.exists():
        pytest.skip("steering-vectors is not importable here (it pins transformers<5) and the "
                    "peer venv is missing: run bench/setup_peers.sh to enable this cross-check")
    src, dst = tmp_path / "acts.safetensors", tmp_path / "theirs.safetensors"
    save_file({"pos": acts["pos"].contiguous(), "neg": acts["neg"].contiguous()}, str(src))
    proc = subprocess.run([str(PEER_PYTHON), str(PEER_SCRIPT), str(src), str(dst)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return load_file(str(dst))["vector"]


def test_mean_diff_matches_steering_vectors_mean_aggregator(activations, tmp_path):
    ours, theirs = _ours(activations), _theirs(activations, tmp_path)
    assert theirs.shape == ours.shape
    cos = _cos(ours, theirs)
    assert float(cos.min()) >= MIN_COSINE, f"per-layer cosines: {cos.tolist()}"
    # theirs is unnormalised: its norm is the raw |mu+ - mu-| we record as raw_norm
    raw = torch.tensor([mean_diff(activations["pos"][:, la], activations["neg"][:, la]).raw_norm
                        for la in range(ours.shape[0])])
    torch.testing.assert_close(theirs.norm(dim=-1), raw, rtol=1e-5, atol=1e-6)


def test_mean_diff_matches_float64_reference(activations):
    ref = activations["pos"].double().mean(0) - activations["neg"].double().mean(0)
    ours = _ours(activations)
    assert float(_cos(ours, ref).min()) >= MIN_COSINE
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(ours.shape[0]), rtol=0, atol=1e-6)
    # the layers really differ (else any vector would pass): the directions are not all one
    assert float(_cos(ours[0], ours[-1])) < 0.99


def test_mean_diff_unequal_counts():
    # steering-vectors' aggregator needs paired rows; ours takes any n_pos, n_neg
    pos, neg = torch.tensor([[2.0, 0.0], [4.0, 0.0], [3.0, 3.0]]), torch.tensor([[0.0, 0.0]])
    tv = mean_diff(pos, neg)
    torch.testing.assert_close(tv.vector * tv.raw_norm, torch.tensor([3.0, 1.0]))
