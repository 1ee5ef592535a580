"""Steered ÷ unsteered greedy ``generate``, vs steering-vectors applying the same vector.

    python bench/bench_steer.py                        # demo + llama100m, peer if the venv exists
    python bench/bench_steer.py --models demo --no-peers

One model, one batch of prompts, exactly ``new_tokens`` new tokens (EOS suppressed, so
every variant does the same work), one vector at the middle layer, timed interleaved:

- ``unsteered``: ``model.generate``;
- ``ours_steer``: inside :func:`trait_pipeline.steering_ops.steer` (``steer_positions=all``);
- ``ours_rows``: inside :class:`~trait_pipeline.steering_ops.RowSteering` with the same term
  on every row (the batched-sweep path);
- ``ours_response``: ``steer(..., positions="response")`` (only the response positions);
- ``steering_vectors`` (peer venv only): ``SteeringVector({L: coef·v}).apply(model)``.

Agreement: ours and steering-vectors must produce identical greedy tokens (both add
``coef·v`` to the output of decoder block L at every position), and the steered tokens
must differ from the unsteered ones (the vector is strong enough to matter).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SHAPES = {"demo": (16, 16, 24), "llama100m": (4, 32, 16)}  # (batch, prompt len, new tokens)
REPEATS = {"demo": 9, "llama100m": 5}


def steering_vector(model, batch, layer: int, seed: int = 0) -> torch.Tensor:
    """A random direction scaled to the mean residual norm at ``layer`` (moves the outputs)."""
    from trait_pipeline.capture import record

    with torch.no_grad(), record(model, [layer]) as rec:
        model(**batch)
    norm = rec.calls[("residual", layer)][0].norm(dim=-1).mean()
    v = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * norm


def measure(name: str, repeats: int | None, warmup: int, with_peer: bool) -> dict:
    from trait_pipeline.steering_ops import RowSteering, SteeringTerm, steer

    repeats = repeats or REPEATS[name]
    common.log(f"steer: {name}{' (+steering-vectors)' if with_peer else ''}")
    model, vocab, n_layers = common.load_model(name)
    bsz, plen, new = SHAPES[name]
    batch = common.token_batch(vocab, bsz, plen)
    layer, coef = n_layers // 2, 1.0
    vec = steering_vector(model, batch, layer)
    term = SteeringTerm(layer, "residual", vec, coef=coef)

    def unsteered():
        return common.greedy(model, batch, new)

    def ours_steer():
        with steer(model, [term]):
            return common.greedy(model, batch, new)

    def ours_rows():
        with RowSteering(model, [[term]] * bsz)(0, bsz):
            return common.greedy(model, batch, new)

    def ours_response():
        with steer(model, [term], positions="response"):
            return common.greedy(model, batch, new)

    fns = {"unsteered": unsteered, "ours_steer": ours_steer, "ours_rows": ours_rows,
           "ours_response": ours_response}
    base_out, ours_out = unsteered(), ours_steer()
    checks = {
        "steered_differs_from_unsteered": not torch.equal(base_out, ours_out),
        "rows_equal_steer": torch.equal(ours_rows(), ours_out),
    }
    if with_peer:
        from steering_vectors import SteeringVector

        sv = SteeringVector(layer_activations={layer: vec.clone()}, layer_type="decoder_block")

        def steering_vectors():
            with sv.apply(model, multiplier=coef):
                return common.greedy(model, batch, new)

        fns["steering_vectors"] = steering_vectors
        checks["steering_vectors_tokens_equal_ours"] = torch.equal(steering_vectors(), ours_out)
    times = common.interleaved(fns, repeats=repeats, warmup=warmup)
    return {
        "model": name, "params": common.n_params(model), "layers": n_layers, "layer": layer,
        "batch": bsz, "prompt_len": plen, "new_tokens": new, "repeats": repeats,
        "checks": checks, "results": common.summary(times, "unsteered"),
    }


def _rows(runs: list[dict]) -> list[tuple]:
    return [
        (r["model"], f"{r['params'] / 1e6:.1f}M", f"L{r['layer']}/{r['layers']}",
         f"{r['batch']}x{r['prompt_len']}+{r['new_tokens']}", k, f"{v['median_s'] * 1e3:.1f}",
         f"{v['ratio']:.3f}", f"{v['min_ratio']:.3f}")
        for r in runs for k, v in r["results"].items()
    ]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(common.MODELS))
    p.add_argument("--repeats", type=int, default=0, help="0: per-model default")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--peer", action="store_true", help="internal: run inside the peer venv")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    models = args.models.split(",")

    if args.peer:
        out = [measure(m, args.repeats, args.warmup, with_peer=True) for m in models]
        print(json.dumps({"machine": common.machine(), "runs": out}))
        return

    runs = [measure(m, args.repeats, args.warmup, with_peer=False) for m in models]
    peer = None
    if not args.no_peers and common.ensure_peers():
        peer = common.run_peer("bench_steer.py", [
            "--peer", "--models", args.models, "--repeats", str(args.repeats),
            "--warmup", str(args.warmup), "--threads", str(args.threads)])
    header = ("model", "params", "layer", "batch+new", "method", "median ms", "÷ unsteered",
              "÷ unsteered (min)")
    common.print_table("steered generate (project env)", _rows(runs), header)
    for r in runs:
        print(f"checks {r['model']}: {r['checks']}")
    if peer:
        common.print_table(
            f"steered generate (peer venv: transformers {peer['machine'].get('transformers')})",
            _rows(peer["runs"]), header)
        for r in peer["runs"]:
            print(f"checks {r['model']} (peer venv): {r['checks']}")
    path = common.write_result("steer", {"runs": runs, "peer": peer})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
