"""Live chat on the demo family: tokens per second streamed over HTTP (SSE, as the page gets
them, one trait projected per token) against the bare decode loop (``stream_capture``), and
the memory of each resident model.

    python bench/bench_chat.py [--tokens 64] [--repeats 3]

Writes nothing but stdout (and ``--json PATH``). The machine is shared: report ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from infer_helpers import TRAIT, write_demo_vectors

from trait_pipeline.chat.routes import ChatSettings
from trait_pipeline.serve import create_app, running

MESSAGE = "how is the game going ?"


def stream(url: str, variant: str, n: int) -> tuple[int, float, float]:
    """(tokens, seconds from request to done, seconds from first to last token)."""
    body = {"experiment": "demo", "variant": variant, "traits": [{"trait": TRAIT, "layer": 10}],
            "messages": [{"role": "user", "content": MESSAGE}], "max_new_tokens": n,
            "min_new_tokens": n}
    start = time.perf_counter()
    first = last = None
    count = 0
    with requests.post(f"{url}/api/chat/stream", json=body, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            if line == "event: token":
                count += 1
                last = time.perf_counter()
                first = first or last
    return count, time.perf_counter() - start, (last - first) if count > 1 else 0.0


def bare(variant_spec, n: int) -> float:
    """Tokens per second of ``stream_capture`` alone (the decode loop, one layer recorded, no
    projection, no HTTP), EOS held back like the chat requests above."""
    from trait_pipeline.models import load_variant
    from trait_pipeline.token_capture import stream_capture

    lm = load_variant(variant_spec, device="cpu")
    ids = lm.encode([lm.format_prompt(MESSAGE)])[0]
    start = time.perf_counter()
    steps = list(stream_capture(lm, ids, [10], max_new_tokens=n, min_new_tokens=n))
    return (len(steps) - 1) / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from trait_pipeline.chat.experiments import load_experiment

    root = Path(tempfile.mkdtemp()) / "experiments"
    write_demo_vectors(root, layers=(10,), methods=("mean_diff",))
    exp = load_experiment("demo", root)
    app = create_app(root, ChatSettings(max_new_tokens=args.tokens, max_resident=3, device="cpu"))
    out = {"tokens": args.tokens, "load": Path("/proc/loadavg").read_text().split()[0], "variants": {}}
    with running(root, app=app) as url:
        for variant in ("base", "instruct", "rm_lora"):
            cold = stream(url, variant, args.tokens)  # loads the model
            warm = [stream(url, variant, args.tokens) for _ in range(args.repeats)]
            best = min(warm, key=lambda w: w[1])
            bare_tps = max(bare(exp.spec(variant), args.tokens) for _ in range(args.repeats))
            out["variants"][variant] = {
                "first_request_s": round(cold[1], 3),
                "tokens_per_s_request": round(best[0] / best[1], 1),
                "tokens_per_s_between_tokens": round((best[0] - 1) / best[2], 1) if best[2] else None,
                "decode_loop_tokens_per_s": round(bare_tps, 1),
                "http_stream_vs_decode_loop": round((best[0] / best[1]) / bare_tps, 3),
            }
        status = requests.get(f"{url}/api/chat/status", timeout=10).json()
        for r in status["pool"]["resident"]:
            out["variants"][r["variant"]].update(
                model_bytes=r["bytes"], rss_delta_bytes=r["rss_delta_bytes"],
                load_seconds=r["load_seconds"])
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
