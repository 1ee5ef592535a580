"""All-layer residual capture ÷ bare forward pass, vs HF hidden states and nnsight.

    python bench/bench_capture.py                      # demo + llama100m, peers if the venv exists
    python bench/bench_capture.py --models llama100m --repeats 9 --no-peers

What is timed, on one model and one token batch, interleaved (see ``common.py``):

- ``bare``: ``model(**batch)``;
- ``ours``: the same call inside :func:`trait_pipeline.capture.record` on every decoder
  block (the extraction/inference capture path), keeping every layer's ``[B, T, d]``;
- ``hf``: ``model(**batch, output_hidden_states=True)``;
- ``nnsight`` (peer venv only): ``NNsight(model).trace(**batch)`` saving every block output.

Before timing, the captured layers are checked equal across methods (block L output =
``hidden_states[L + 1]``; the last HF entry has the final norm applied, so it is skipped).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SHAPES = {"demo": (16, 32), "llama100m": (4, 64)}  # (batch, seq)
REPEATS = {"demo": 21, "llama100m": 7}  # a demo forward is ~0.1 s: more repeats beat the noise


def _ours(model, batch, n_layers):
    from trait_pipeline.capture import record

    with torch.no_grad(), record(model, range(n_layers), ["residual"]) as rec:
        model(**batch)
    return [rec.calls[("residual", la)][0] for la in range(n_layers)]


def _hf(model, batch):
    with torch.no_grad():
        return model(**batch, output_hidden_states=True).hidden_states


def _nnsight(nm, batch, n_layers):
    saved = []
    # nnsight runs the body of the trace from its source: keep it in a function
    with torch.no_grad(), nm.trace(**batch):
        for la in range(n_layers):
            saved.append(nm.model.layers[la].output.save())
    return [s[0] if isinstance(s, tuple) else s for s in saved]


def measure(name: str, repeats: int | None, warmup: int, with_nnsight: bool) -> dict:
    repeats = repeats or REPEATS[name]
    common.log(f"capture: {name}{' (+nnsight)' if with_nnsight else ''}")
    model, vocab, n_layers = common.load_model(name)
    bsz, seq = SHAPES[name]
    batch = common.token_batch(vocab, bsz, seq)

    ours, hf = _ours(model, batch, n_layers), _hf(model, batch)
    assert all(torch.equal(ours[la], hf[la + 1]) for la in range(n_layers - 1)), \
        "ours != hidden_states[L+1]"
    fns = {
        "bare": lambda: model(**batch),
        "ours": lambda: _ours(model, batch, n_layers),
        "hf_hidden_states": lambda: _hf(model, batch),
    }
    if with_nnsight:
        from nnsight import NNsight

        nm = NNsight(model)
        nn_out = _nnsight(nm, batch, n_layers)
        assert all(torch.equal(ours[la], nn_out[la]) for la in range(n_layers)), "ours != nnsight"
        fns["nnsight"] = lambda: _nnsight(nm, batch, n_layers)
    with torch.no_grad():
        times = common.interleaved(fns, repeats=repeats, warmup=warmup)
    return {
        "model": name, "params": common.n_params(model), "layers": n_layers,
        "batch": bsz, "seq": seq, "repeats": repeats, "results": common.summary(times, "bare"),
    }


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

    if args.peer:  # in the peer venv: bare, ours, hf and nnsight in one process
        out = [measure(m, args.repeats, args.warmup, with_nnsight=True) for m in models]
        print(json.dumps({"machine": common.machine(), "runs": out}))
        return

    runs = [measure(m, args.repeats, args.warmup, with_nnsight=False) for m in models]
    peer = None
    if not args.no_peers and common.ensure_peers():
        peer = common.run_peer("bench_capture.py", [
            "--peer", "--models", args.models, "--repeats", str(args.repeats),
            "--warmup", str(args.warmup), "--threads", str(args.threads)])
    rows = []
    for r in runs:
        for k, v in r["results"].items():
            rows.append((r["model"], f"{r['params'] / 1e6:.1f}M", r["layers"], f"{r['batch']}x{r['seq']}",
                         k, f"{v['median_s'] * 1e3:.1f}", f"{v['ratio']:.3f}", f"{v['min_ratio']:.3f}"))
    header = ("model", "params", "layers", "batch", "method", "median ms", "÷ bare", "÷ bare (min)")
    common.print_table("capture (project env)", rows, header)
    if peer:
        prow = []
        for r in peer["runs"]:
            for k, v in r["results"].items():
                prow.append((r["model"], f"{r['params'] / 1e6:.1f}M", r["layers"],
                             f"{r['batch']}x{r['seq']}", k, f"{v['median_s'] * 1e3:.1f}", f"{v['ratio']:.3f}",
                             f"{v['min_ratio']:.3f}"))
        common.print_table(
            f"capture (peer venv: transformers {peer['machine'].get('transformers')})", prow, header)
    path = common.write_result("capture", {"runs": runs, "peer": peer})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
