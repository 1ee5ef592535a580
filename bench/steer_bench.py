"""Steering cost on the demo family (run by hand; figures go to docs/steer.md).

    python bench/steer_bench.py [--device cpu|cuda] [--layers 4] [--coefs 4] [--questions 20]

1. steered / unsteered generation time on the same batch (one RowSteering config per row);
2. a batched sweep (L layers x K coefs in one generate with per-row steering) versus the
   sequential loop (one generate per (layer, coef)), same prompts, greedy.
Random unit directions stand in for trait vectors: the cost does not depend on the vector.
"""

from __future__ import annotations

import argparse
import time

import torch

from trait_pipeline.config import VariantSpec
from trait_pipeline.generation import generate
from trait_pipeline.models import load_variant
from trait_pipeline.steering_ops import RowSteering, SteeringTerm, steer
from trait_pipeline.trait_data import load_steering


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--coefs", type=int, default=4)
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lm = load_variant(VariantSpec("instruct", "demo:instruct", dtype="float32"), device=a.device)
    qs = load_steering("demo/optimism").questions[: a.questions]
    d = lm.model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    layers = [int(x) for x in torch.linspace(4, lm.n_layers - 4, a.layers).tolist()]
    raw = {la: torch.randn(d, generator=g) for la in layers}
    vecs = {la: v / v.norm() for la, v in raw.items()}
    coefs = [5.0 * (i + 1) for i in range(a.coefs)]
    gen = {"max_new_tokens": a.max_new_tokens, "batch_size": len(qs)}
    generate(lm, qs[:2], max_new_tokens=2)  # warm-up

    t_plain, _ = timed(lambda: generate(lm, qs, **gen))
    rows = [[SteeringTerm(layers[0], "residual", vecs[layers[0]], coef=coefs[0])]] * len(qs)
    t_steer, _ = timed(lambda: generate(lm, qs, **gen, batch_context=RowSteering(lm.model, rows)))
    print(f"device {a.device}: {len(qs)} prompts x {a.max_new_tokens} new tokens, one batch")
    print(f"  unsteered {t_plain:.3f} s, steered {t_steer:.3f} s, ratio {t_steer / t_plain:.2f}")

    configs = [[SteeringTerm(la, "residual", vecs[la], coef=c)] for la in layers for c in coefs]
    all_rows = [c for c in configs for _ in qs]
    prompts = qs * len(configs)
    bs = min(len(prompts), 128 if a.device != "cpu" else 64)
    t_batched, outs = timed(lambda: generate(lm, prompts, max_new_tokens=a.max_new_tokens, batch_size=bs,
                                              batch_context=RowSteering(lm.model, all_rows)), repeat=1)

    def loop():
        res = []
        for c in configs:
            with steer(lm.model, c):
                res += generate(lm, qs, **gen)
        return res

    t_loop, outs_loop = timed(loop, repeat=1)
    same = [o.response_ids for o in outs] == [o.response_ids for o in outs_loop]
    print(f"  sweep of {a.layers} layers x {a.coefs} coefs ({len(prompts)} rows, batch {bs}): "
          f"batched {t_batched:.2f} s, sequential loop {t_loop:.2f} s, speed-up {t_loop / t_batched:.2f}x, "
          f"identical responses: {same}")


if __name__ == "__main__":
    main()
