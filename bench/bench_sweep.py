"""L layers × K coefficients in one batched ``generate`` (RowSteering) vs a sequential loop.

    python bench/bench_sweep.py                        # demo + llama100m
    python bench/bench_sweep.py --models demo --layers 4 --coefs 4 --questions 4

The steer stage's grid: Q questions steered by each of L·K (layer, coef) configs.

- ``loop``: L·K calls of ``generate`` on the Q questions, each inside ``steer(...)``;
- ``batched``: one ``generate`` on L·K·Q rows (config-major) with ``RowSteering``.

Both produce exactly ``new_tokens`` tokens per row (EOS suppressed). The token agreement
between the two is reported (batched matmuls may round differently from small ones, so a
rare greedy flip is possible; on the runs so far every token agreed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from bench_steer import steering_vector

SHAPES = {"demo": (4, 16, 16), "llama100m": (2, 16, 8)}  # (questions, prompt len, new tokens)
REPEATS = {"demo": 5, "llama100m": 3}


def measure(name: str, n_layers_swept: int, n_coefs: int, repeats: int | None, warmup: int) -> dict:
    from trait_pipeline.steering_ops import RowSteering, SteeringTerm, steer

    repeats = repeats or REPEATS[name]
    common.log(f"sweep: {name}")
    model, vocab, n_layers = common.load_model(name)
    q, plen, new = SHAPES[name]
    batch = common.token_batch(vocab, q, plen)
    layers = [round(i * (n_layers - 1) / (n_layers_swept + 1)) for i in range(1, n_layers_swept + 1)]
    coefs = [0.25 * (k + 1) for k in range(n_coefs)]
    vecs = {la: steering_vector(model, batch, la, seed=la) for la in layers}
    configs = [SteeringTerm(la, "residual", vecs[la], coef=c) for la in layers for c in coefs]
    rows = [[t] for t in configs for _ in range(q)]  # config-major, as the steer stage plans
    big = {k: v.repeat(len(configs), 1) for k, v in batch.items()}

    def loop():
        outs = []
        for t in configs:
            with steer(model, [t]):
                outs.append(common.greedy(model, batch, new))
        return torch.cat(outs)

    def batched():
        with RowSteering(model, rows)(0, len(rows)):
            return common.greedy(model, big, new)

    a, b = loop(), batched()
    agree = float((a[:, -new:] == b[:, -new:]).float().mean())
    times = common.interleaved({"loop": loop, "batched": batched}, repeats=repeats, warmup=warmup)
    res = common.summary(times, "loop")
    return {
        "model": name, "params": common.n_params(model), "layers_swept": layers, "coefs": coefs,
        "questions": q, "prompt_len": plen, "new_tokens": new, "rows": len(rows),
        "repeats": repeats, "token_agreement": agree, "results": res,
        "speedup": 1 / res["batched"]["ratio"], "speedup_min": 1 / res["batched"]["min_ratio"],
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(common.MODELS))
    p.add_argument("--layers", type=int, default=4, help="L: layers swept")
    p.add_argument("--coefs", type=int, default=4, help="K: coefficients per layer")
    p.add_argument("--repeats", type=int, default=0, help="0: per-model default")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    runs = [measure(m, args.layers, args.coefs, args.repeats, args.warmup)
            for m in args.models.split(",")]
    rows = [
        (r["model"], f"{len(r['layers_swept'])}x{len(r['coefs'])}", f"{r['questions']}x{r['prompt_len']}+{r['new_tokens']}",
         f"{r['results']['loop']['median_s']:.2f}", f"{r['results']['batched']['median_s']:.2f}",
         f"{r['speedup']:.2f}x", f"{r['speedup_min']:.2f}x", f"{r['token_agreement']:.3f}")
        for r in runs
    ]
    common.print_table("batched sweep vs loop", rows, (
        "model", "L x K", "questions x prompt+new", "loop s", "batched s", "speedup",
        "speedup (min)", "token agreement"))
    path = common.write_result("sweep", {"runs": runs})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
