"""Extraction math: our mean_diff vs steering-vectors' mean aggregator (cosine ≥ 0.999999).

    python bench/bench_extraction_math.py              # needs bench/.venv-peers for the peer side

1. Same activations: the demo base model's residual activations at the last token of the
   60 paired positive/negative prompts of ``demo/optimism``, every layer, captured in the
   project env with :func:`trait_pipeline.capture.record`; our
   :func:`~trait_pipeline.vector_methods.mean_diff` vs ``mean_aggregator()`` run on the same
   tensors in the peer venv (``peer_mean_aggregator.py``). Cosine per layer.
2. Same prompts, each library capturing for itself (peer venv): ``train_steering_vector``
   (``read_token_index=-1``) vs our ``record`` + ``mean_diff``. This one also checks that
   layer L means the same block in both (an off-by-one would give cosines well below 1).
3. Speed of the math alone on ``[n, d]`` float32 (n = d = 2048), in one process.

The correctness part is also a test: ``tests/test_peer_crosscheck.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

TRAIT_DIR = common.REPO / "datasets" / "traits" / "demo" / "optimism"
MIN_COSINE = 0.999999


def contrast_prompts(n: int = 60) -> tuple[list[str], list[str]]:
    pos = [s for s in (TRAIT_DIR / "positive.txt").read_text().splitlines() if s.strip()][:n]
    neg = [s for s in (TRAIT_DIR / "negative.txt").read_text().splitlines() if s.strip()][:n]
    return pos, neg


def load_tokenizer(path: Path):
    """The demo tokenizer; transformers 4 (peer venv) cannot read v5's tokenizer_config class."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except ValueError:
        return PreTrainedTokenizerFast(tokenizer_file=str(Path(path) / "tokenizer.json"),
                                       bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                       unk_token="<unk>")


def last_token_acts(model, tok, prompts: list[str]) -> torch.Tensor:
    """``[n, n_layers, d]``: every block's output at each prompt's last token (one at a time)."""
    from trait_pipeline.capture import record

    n_layers = model.config.num_hidden_layers
    rows = []
    with torch.no_grad(), record(model, range(n_layers)) as rec:
        for p in prompts:
            rec.clear()
            model(**tok(p, return_tensors="pt"))
            rows.append(torch.stack([rec.calls[("residual", la)][0][0, -1] for la in range(n_layers)]))
    return torch.stack(rows)


def ours_per_layer(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    from trait_pipeline.vector_methods import mean_diff

    return torch.stack([mean_diff(pos[:, la], neg[:, la]).vector for la in range(pos.shape[1])])


def cosines(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).tolist()


def peer_side() -> dict:
    """In the peer venv: end-to-end layer check and the timing of the math."""
    from steering_vectors import mean_aggregator, train_steering_vector

    from trait_pipeline.demo_family import ensure_demo_family

    model, _, n_layers = common.load_model("demo", "base")
    tok = load_tokenizer(ensure_demo_family().base)
    pos, neg = contrast_prompts()
    sv = train_steering_vector(model, tok, list(zip(pos, neg)), layers=list(range(n_layers)),
                               read_token_index=-1, aggregator=mean_aggregator())
    theirs = torch.stack([sv.layer_activations[la] for la in range(n_layers)])
    ours = ours_per_layer(last_token_acts(model, tok, pos), last_token_acts(model, tok, neg))
    e2e = cosines(ours, theirs)

    from trait_pipeline.vector_methods import mean_diff

    gen = torch.Generator().manual_seed(0)
    p, q = torch.randn(2048, 2048, generator=gen), torch.randn(2048, 2048, generator=gen) + 0.1
    agg = mean_aggregator()
    times = common.interleaved({
        "ours_mean_diff": lambda: mean_diff(p, q),
        "steering_vectors_mean_aggregator": lambda: agg(p, q),
    }, repeats=21, warmup=3)
    return {"machine": common.machine(), "end_to_end_cosines": e2e,
            "math_timing": common.summary(times, "steering_vectors_mean_aggregator")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--peer", action="store_true", help="internal: run inside the peer venv")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    if args.peer:
        print(json.dumps(peer_side()))
        return
    if not common.ensure_peers():
        raise SystemExit("the peer venv (bench/.venv-peers) is needed: run bench/setup_peers.sh")

    from safetensors.torch import load_file, save_file

    from trait_pipeline.demo_family import ensure_demo_family

    common.log("extraction math: capturing demo/optimism activations")
    model, _, _ = common.load_model("demo", "base")
    tok = load_tokenizer(ensure_demo_family().base)
    pos_p, neg_p = contrast_prompts()
    pos, neg = last_token_acts(model, tok, pos_p), last_token_acts(model, tok, neg_p)
    ours = ours_per_layer(pos, neg)
    with tempfile.TemporaryDirectory() as tmp:
        save_file({"pos": pos.contiguous(), "neg": neg.contiguous()}, f"{tmp}/in.safetensors")
        subprocess.run([str(common.PEER_PYTHON), str(common.BENCH_DIR / "peer_mean_aggregator.py"),
                        f"{tmp}/in.safetensors", f"{tmp}/out.safetensors"], check=True)
        theirs = load_file(f"{tmp}/out.safetensors")["vector"]
    same = cosines(ours, theirs)
    common.log("extraction math: peer side (end-to-end + timing)")
    peer = common.run_peer("bench_extraction_math.py", ["--peer", "--threads", str(args.threads)])
    e2e = peer["end_to_end_cosines"]
    rows = [
        ("same activations (mean_diff vs mean_aggregator)", len(same), f"{min(same):.9f}",
         "yes" if min(same) >= MIN_COSINE else "NO"),
        ("same prompts, own capture (record vs train_steering_vector)", len(e2e),
         f"{min(e2e):.9f}", "yes" if min(e2e) >= MIN_COSINE else "NO"),
    ]
    common.print_table("extraction math cross-check (demo base, 60 pairs, every layer)", rows,
                       ("check", "layers", "min cosine", f">= {MIN_COSINE}"))
    t = peer["math_timing"]
    common.print_table("mean of [2048, 2048] float32 pairs (peer venv, one process)", [
        (k, f"{v['median_s'] * 1e3:.2f}", f"{v['ratio']:.2f}") for k, v in t.items()
    ], ("method", "median ms", "÷ steering-vectors"))
    path = common.write_result("extraction_math", {
        "same_activation_cosines": same, "end_to_end_cosines": e2e, "math_timing": t,
        "peer_machine": peer["machine"], "min_cosine_required": MIN_COSINE,
    })
    print(f"\nwrote {path}")
    if min(same) < MIN_COSINE or min(e2e) < MIN_COSINE:
        raise SystemExit("cross-check FAILED: cosine below the bound")


if __name__ == "__main__":
    main()
