"""Peak memory of inference capture at 1x and 10x the prompts (each in its own process).

    python bench/bench_infer_memory.py                     # demo family, CPU
    python bench/bench_infer_memory.py --prompts 8 --factor 10 --max-new-tokens 24

Each run is ``python -m trait_pipeline.infer`` on a fresh experiments folder with a prompt
set of N (then factor x N) demo questions, projecting onto one (synthetic) layer-10
vector. The batch size is fixed so both runs hold the same batch in memory; what this
measures is whether memory grows with the number of prompts (it must not: every prompt
is written to disk as soon as its batch is done). The peak RSS of each child comes from
``os.wait4``; the bytes of activations written are reported beside it, i.e. what the
process would hold if it kept them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _prompt_set(datasets: Path, n: int) -> None:
    """``datasets/inference/bench.json``: the demo questions repeated to ``n`` prompts."""
    demo = json.loads((ROOT / "datasets" / "inference" / "demo.json").read_text())["prompts"]
    prompts = [{"id": i + 1, "text": demo[i % len(demo)]["text"]} for i in range(n)]
    (datasets / "inference").mkdir(parents=True, exist_ok=True)
    (datasets / "inference" / "bench.json").write_text(json.dumps({"prompts": prompts}))


def _vector(experiments: Path) -> None:
    import torch

    from trait_pipeline.layout import Layout
    from trait_pipeline.vector_store import save_vector

    lay = Layout(experiments, "demo")
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    save_vector(lay.vector_path("demo/optimism", "base", "response[:5]", "residual", "mean_diff", 10),
                v, {"model": "demo:base", "layer": 10, "method": "mean_diff", "note": "bench"})


def measure(n: int, args, work: Path) -> dict:
    """Run the stage on ``n`` prompts in a child process; its peak RSS and outputs."""
    datasets, experiments = work / f"datasets_{n}", work / f"experiments_{n}"
    shutil.copytree(ROOT / "datasets" / "traits", datasets / "traits")
    _prompt_set(datasets, n)
    _vector(experiments)
    cmd = [sys.executable, "-m", "trait_pipeline.infer", f"paths.experiments={experiments}",
           f"paths.datasets={datasets}", "prompt_set=bench", "layer=10", "method=mean_diff",
           f"model_variant={args.variant}", f"generation.max_new_tokens={args.max_new_tokens}",
           f"generation.batch_size={args.batch_size}", f"device={args.device}",
           f"capture_components=[{args.components}]"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"run with {n} prompts failed:\n{out[-3000:]}")
    raw = experiments / "demo" / "inference" / args.variant / "raw" / "bench"
    raw_bytes = sum(p.stat().st_size for p in raw.glob("*.safetensors"))
    rss_kb = usage.ru_maxrss  # kilobytes on Linux
    return {"prompts": n, "peak_rss_mb": rss_kb / 1024, "raw_written_mb": raw_bytes / 2**20,
            "files": len(list(raw.glob("*.safetensors"))), "seconds": time.time() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8, help="prompts in the 1x run")
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--variant", default="instruct")
    ap.add_argument("--components", default="residual", help="e.g. residual,attn_out,mlp_out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        rows = [measure(n, args, Path(tmp)) for n in (args.prompts, args.prompts * args.factor)]
    small, big = rows
    ratio = big["peak_rss_mb"] / small["peak_rss_mb"]
    print(f"{'prompts':>8} {'peak RSS MB':>12} {'raw written MB':>15} {'seconds':>8}")
    for r in rows:
        print(f"{r['prompts']:>8} {r['peak_rss_mb']:>12.1f} {r['raw_written_mb']:>15.2f} "
              f"{r['seconds']:>8.1f}")
    print(f"peak RSS ratio {args.factor}x prompts / 1x: {ratio:.3f} "
          f"(+{big['peak_rss_mb'] - small['peak_rss_mb']:.1f} MB while "
          f"{big['raw_written_mb'] - small['raw_written_mb']:.1f} MB more activations were written)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratio": ratio, "args": vars(args)},
                                        default=str, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
