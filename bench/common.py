"""Shared pieces of the benchmarks: models, timing, the peer venv, result files.

Every benchmark measures *ratios in one run*: the variants of a measurement run
interleaved (A B C A B C ...) on the same model and batch, after warm-up, and each
variant's figure is the median of its repeats, so slow drift of a shared machine hits all
variants alike.

>>> # times = interleaved({"bare": f, "ours": g}, repeats=7, warmup=2)
>>> # ratio(times, "ours", "bare")          # median(ours) / median(bare)

Peers (nnsight, steering-vectors) pin other library versions (steering-vectors needs
transformers < 5), so they live in ``bench/.venv-peers`` (made by ``setup_peers.sh``) and
are measured there by :func:`run_peer`, which runs a script of this folder in that venv
and reads back its JSON. Peer scripts time our code in the same process as the peer, so
every "vs peer" ratio is also taken in one run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PEER_VENV = BENCH_DIR / ".venv-peers"
PEER_PYTHON = PEER_VENV / "bin" / "python"

# ~104M parameters, 28 decoder blocks: big enough that matmuls dominate a forward pass,
# with enough blocks that any per-layer Python cost (hooks) shows.
LLAMA_100M = {
    "vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 28,
    "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 1024,
    "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}
MODELS = ("demo", "llama100m")


def set_threads(n: int) -> None:
    """Fix torch's intra-op threads.

    Default 1: on a shared 2-core machine two OpenMP threads spin against other work and
    a forward pass gets 5-10x slower and far noisier than with one.
    """
    torch.set_num_threads(int(n))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_model(name: str, variant: str = "instruct"):
    """(model, vocab_size, n_layers) in float32 eval mode; ``name`` in :data:`MODELS`.

    ``demo`` is the demo family's variant (built on first use); ``llama100m`` is a
    random-weight Llama built locally from :data:`LLAMA_100M` with a fixed seed.
    """
    if name == "demo":
        from transformers import AutoModelForCausalLM

        from trait_pipeline.demo_family import ensure_demo_family

        fam = ensure_demo_family()
        model = AutoModelForCausalLM.from_pretrained(str(getattr(fam, variant)), dtype=torch.float32)
    elif name == "llama100m":
        from transformers import LlamaConfig, LlamaForCausalLM

        try:
            from transformers.initialization import no_init_weights  # transformers 5
        except ImportError:  # the peer venv's transformers 4
            from transformers.modeling_utils import no_init_weights

        with no_init_weights():  # HF's per-module init takes ~10 s; one randn fill is enough
            model = LlamaForCausalLM(LlamaConfig(**LLAMA_100M)).to(torch.float32)
        model.tie_weights()
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for pname, prm in model.named_parameters():
                if "norm" in pname:
                    prm.fill_(1.0)
                else:
                    prm.copy_(torch.randn(prm.shape, generator=gen) * 0.02)
    else:
        raise SystemExit(f"unknown model {name!r}; expected one of: {', '.join(MODELS)}")
    model.eval()
    return model, model.config.vocab_size, model.config.num_hidden_layers


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def token_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids (ids >= 4 skip the demo's special tokens), full attention mask."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, seq), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def greedy(model, batch: dict[str, torch.Tensor], new_tokens: int) -> torch.Tensor:
    """Greedy ``generate`` of exactly ``new_tokens`` tokens (EOS suppressed: equal work)."""
    with torch.no_grad():
        return model.generate(
            **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            temperature=None, top_p=None, top_k=None, pad_token_id=0, eos_token_id=2,
        )


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2
                ) -> dict[str, list[float]]:
    """Wall times (s) of each function, run in rounds so drift hits all alike.

    Each round starts one function later than the previous one, so no function always
    runs first (right after another's memory was freed) or last.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def med(times: list[float]) -> float:
    return statistics.median(times)


def ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    return med(times[num]) / med(times[den])


def summary(times: dict[str, list[float]], base: str) -> dict[str, dict[str, float]]:
    """``{name: {median_s, ratio, min_s, min_ratio, max_s}}``, ratios to ``base``.

    ``min_ratio`` (fastest ÷ fastest) is the steadier figure when the machine is loaded.
    """
    return {
        k: {"median_s": med(v), "ratio": med(v) / med(times[base]), "min_s": min(v),
            "min_ratio": min(v) / min(times[base]), "max_s": max(v), "times_s": list(v)}
        for k, v in times.items()
    }


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "loadavg_1m": os.getloadavg()[0], "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def write_result(name: str, payload: dict) -> Path:
    """``bench/results/{name}.json`` (git-ignored), with the machine it ran on."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    os.replace(tmp, path)
    return path


def peers_available() -> bool:
    return PEER_PYTHON.exists()


def ensure_peers() -> bool:
    """Make the peer venv if missing (needs the package index once); False if that fails."""
    if peers_available():
        return True
    rc = subprocess.run(["bash", str(BENCH_DIR / "setup_peers.sh")], check=False).returncode
    return rc == 0 and peers_available()


def run_peer(script: str, args: list[str], timeout: float = 1800) -> dict:
    """Run ``bench/{script}`` in the peer venv; it prints one JSON object as its last line."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [str(PEER_PYTHON), str(BENCH_DIR / script), *args], capture_output=True, text=True,
        timeout=timeout, env=env, cwd=str(REPO), check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"peer run {script} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(title: str, rows: list[tuple], header: tuple) -> None:
    """A small aligned table on stdout (what ends up in docs/benchmarks.md)."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for j, r in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()
