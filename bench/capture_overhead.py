"""Activation capture time ÷ a bare forward pass on the same batch (extraction's capture step).

    python bench/capture_overhead.py [--variant base] [--batch 64] [--repeats 20] [--device cpu]

Times, on one left-padded batch of demo prompts:
  bare       model(**batch)                         (full logits, what a plain forward costs)
  bare_k1    model(**batch, logits_to_keep=1)       (what capture runs, minus the hooks)
  capture    extract.capture_means: hooks on every layer + window means, one forward
and prints the medians and the ratios capture/bare and capture/bare_k1.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trait_pipeline.config import VariantSpec
from trait_pipeline.extract import Example, capture_means
from trait_pipeline.models import load_variant
from trait_pipeline.positions import Position
from trait_pipeline.trait_data import load_trait_data

VARIANTS = {
    "base": VariantSpec("base", "demo:base", use_chat_template=False, dtype="float32"),
    "instruct": VariantSpec("instruct", "demo:instruct", dtype="float32"),
    "rm_lora": VariantSpec("rm_lora", "demo:instruct", lora="demo:rm_lora", dtype="float32"),
}


def interleaved_medians(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each function, run round-robin so background load
    hits all alike. CPU time (all threads of this process) is the steadier figure on a
    shared machine; on a GPU only wall time means anything."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
            for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="base", choices=sorted(VARIANTS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--position", default="response[:5]")
    args = ap.parse_args()

    lm = load_variant(VARIANTS[args.variant], device=args.device)
    data = load_trait_data("demo/optimism")
    prompts = [s.prompt for s in data.positive + data.negative][: args.batch]
    ids = lm.encode([lm.format_prompt(p) for p in prompts])
    # the last 5 tokens stand in for a response, so every window is non-empty
    examples = [Example("pos", i, i, row, prompt_len=len(row) - 5) for i, row in enumerate(ids)]
    batch = lm.pad_batch(ids)
    pos = Position.parse(args.position)

    with torch.no_grad():
        t = interleaved_medians({
            "bare": lambda: lm.model(**batch),
            "bare_k1": lambda: lm.model(**batch, logits_to_keep=1),
            "capture": lambda: capture_means(lm, examples, pos, "residual", batch_size=len(examples)),
        }, args.repeats)
    print(f"variant={args.variant} device={lm.device} batch={len(examples)}x{batch['input_ids'].shape[1]} "
          f"layers={lm.n_layers} threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'':24} {'wall ms':>9} {'cpu ms':>9}")
    for name, label in (("bare", "bare forward"), ("bare_k1", "bare, logits_to_keep=1"),
                        ("capture", "capture (all layers)")):
        print(f"{label:24} {t[name][0] * 1e3:9.2f} {t[name][1] * 1e3:9.2f}")
    for ref in ("bare", "bare_k1"):
        print(f"capture / {ref:<14} {t['capture'][0] / t[ref][0]:9.2f} {t['capture'][1] / t[ref][1]:9.2f}")

if __name__ == "__main__":
    main()
