"""The GPU check: the demo pipeline on CUDA against a CPU run of the same seed, and the
overheads of capture and steering on a random-weight Llama-3-8B-shaped model in bf16.

Run by ``bench/gpu_check.sh`` one part at a time (each in its own time box), or by hand:

    python3 bench/gpu_check.py --part demo  --out bench/results     # CUDA vs CPU pipeline
    python3 bench/gpu_check.py --part bench --out bench/results     # 8B-shaped overheads
    python3 bench/gpu_check.py --part summary --out bench/results   # -> gpu_check.json
    python3 bench/gpu_check.py --part bench --out /tmp/r --cpu-smoke  # tiny, CPU, seconds

Every part writes ``{out}/{part}.json``; the summary merges whatever parts exist, so one
failed or timed-out part never loses the others' figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRAIT = "demo/optimism"


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write(out: Path, name: str, data: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
    log(f"wrote {out / f'{name}.json'}")


def environment() -> dict:
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "cuda": torch.cuda.is_available(),
           "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
           "cpu_count": os.cpu_count()}
    try:
        import peft
        env["peft"] = peft.__version__
    except ImportError:
        env["peft"] = None
    return env


# ------------------------------------------------------------------------------------------
# part 1: the pipeline on CUDA vs CPU


def _stage(stage: str, args: list[str], exp: Path) -> float:
    cmd = [sys.executable, "-m", f"trait_pipeline.{stage}", *args, f"paths.experiments={exp}"]
    log("$ " + " ".join(cmd[2:]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False,
                          env={**os.environ, "TQDM_DISABLE": "1", "HYDRA_FULL_ERROR": "0"})
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return round(time.perf_counter() - t0, 2)


def _first_divergence(a: list, b: list) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _compare_runs(exp: dict[str, Path]) -> dict:
    """Vectors, steering responses, inference tokens and projections of two runs."""
    import torch

    from trait_pipeline.vector_store import load_vector

    a, b = (Path(p) / "demo" for p in exp.values())
    out: dict = {"vectors": [], "steering": [], "inference": []}
    for fa in sorted((a / "extraction").rglob("vectors/**/layer*.safetensors")):
        fb = b / fa.relative_to(a)
        if fb.is_file():
            va, vb = load_vector(fa)[0].float(), load_vector(fb)[0].float()
            out["vectors"].append({"file": str(fa.relative_to(a)),
                                   "cosine": round(float(torch.nn.functional.cosine_similarity(
                                       va, vb, dim=0)), 6)})
    for fa in sorted((a / "steering").rglob("responses/*.json")):
        fb = b / fa.relative_to(a)
        if not fb.is_file():
            continue
        ra, rb = (json.loads(f.read_text())["responses"] for f in (fa, fb))
        for i, (x, y) in enumerate(zip(ra, rb)):
            wa, wb = x["response"].split(), y["response"].split()
            div = _first_divergence(wa, wb)
            out["steering"].append({"file": fa.name, "question": i, "equal": div is None,
                                    "first_divergence_word": div,
                                    "a": " ".join(wa[max(0, (div or 0) - 3):(div or 0) + 5]) if div is not None else None,
                                    "b": " ".join(wb[max(0, (div or 0) - 3):(div or 0) + 5]) if div is not None else None})
    for fa in sorted((a / "inference").rglob("responses/*/*.json")):
        fb = b / fa.relative_to(a)
        if not fb.is_file():
            continue
        ta, tb = (json.loads(f.read_text())["response"]["token_ids"] for f in (fa, fb))
        div = _first_divergence(ta, tb)
        row = {"file": str(fa.relative_to(a)), "equal": div is None, "first_divergence_token": div,
               "n_tokens": [len(ta), len(tb)]}
        variant = fa.relative_to(a / "inference").parts[0]
        pa = next((a / "inference" / variant / "projections").rglob(fa.name), None)
        if pa is not None:
            pb = b / pa.relative_to(a)
            if pb.is_file():
                ja, jb = (json.loads(f.read_text())["projections"] for f in (pa, pb))
                upto = len(ja["response"]) if div is None else div
                diffs = [abs(x - y) for x, y in zip(ja["prompt"], jb["prompt"])]
                diffs += [abs(x - y) for x, y in zip(ja["response"][:upto], jb["response"][:upto])]
                scale = max([abs(x) for x in ja["prompt"] + ja["response"]] or [1.0])
                row["projection_max_abs_diff"] = round(max(diffs or [0.0]), 6)
                row["projection_max_rel_diff"] = round(max(diffs or [0.0]) / max(scale, 1e-9), 6)
        out["inference"].append(row)
    steer = out["steering"]
    inf = out["inference"]
    out["summary"] = {
        "min_vector_cosine": min((v["cosine"] for v in out["vectors"]), default=None),
        "steering_responses_equal": f"{sum(s['equal'] for s in steer)}/{len(steer)}",
        "inference_tokens_equal": f"{sum(r['equal'] for r in inf)}/{len(inf)}",
        "max_projection_rel_diff": max((r.get("projection_max_rel_diff", 0) for r in inf), default=None),
    }
    return out


def part_demo(out: Path, smoke: bool) -> dict:
    import torch

    if smoke:  # the demo family at tiny sizes, both runs on the CPU
        # (the demo family, not a random stand-in: the offline judge must find words to score,
        # and an answer it cannot judge is never stored as a result)
        model = []
        devices = ["cpu", "cpu"]
        extract = ["max_pairs=4", "generation.max_new_tokens=6", "layers=[10]",
                   "steps=[generate,activations,vectors]", "method=[mean_diff]"]
        steer = ["layer=10", "coef=[4]", "questions=4", "generation.max_new_tokens=12"]
        infer = ["limit=2", "generation.max_new_tokens=6", "layer=10"]
    else:
        model = []
        devices = ["cuda", "cpu"]
        # no evaluate step: its heatmap needs matplotlib, which a bare GPU box may lack
        extract = ["max_pairs=24", "method=[mean_diff,probe]",
                   "steps=[generate,activations,vectors]"]
        steer = ["layer=10", "coef=[4,8]", "questions=6"]
        infer = ["limit=8", "layer=10"]
    if devices[0] == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: run with --cpu-smoke")
    common = [f"trait={TRAIT}", "seed=0", "method=mean_diff", *model]
    timings: dict = {}
    exp: dict = {}
    for k, dev in enumerate(devices):
        key = f"run{k}_{dev}"
        root = out / "pipeline" / key
        exp[key] = root
        t = {}
        t["extract"] = _stage("extract", [*common[:2], *model, *extract, f"device={dev}"], root)
        t["steer"] = _stage("steer", [*common, *steer, f"device={dev}"], root)
        t["infer"] = _stage("infer", [*common, *infer, f"device={dev}"], root)
        timings[key] = t
    return {"devices": devices, "stage_seconds": timings, "comparison": _compare_runs(exp)}


# ------------------------------------------------------------------------------------------
# part 2: overheads on a Llama-3-8B-shaped random model


def _timed(fn, sync, repeats: int) -> float:
    fn()  # warm-up (kernels, caches)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _spread(model, n_gpus: int) -> dict:
    """Layers spread over the GPUs in contiguous slices (accelerate adds the moving hooks)."""
    from accelerate import dispatch_model

    from trait_pipeline.layers import decoder_layers

    n = len(decoder_layers(model))
    dmap = {"model.embed_tokens": 0, "model.rotary_emb": 0,
            "model.norm": n_gpus - 1, "lm_head": n_gpus - 1}
    dmap |= {f"model.layers.{i}": i * n_gpus // n for i in range(n)}
    dispatch_model(model, device_map=dmap)
    return {f"cuda:{g}": sum(1 for i in range(n) if i * n_gpus // n == g) for g in range(n_gpus)}


def part_bench(out: Path, smoke: bool) -> dict:
    import torch
    import transformers

    from trait_pipeline.archs.standins import STANDINS, build_tokenizer
    from trait_pipeline.capture import record
    from trait_pipeline.config import VariantSpec
    from trait_pipeline.generation import generate
    from trait_pipeline.models import LoadedModel
    from trait_pipeline.steering_ops import RowSteering, SteeringTerm, steer

    cuda = torch.cuda.is_available() and not smoke
    if not cuda and not smoke:
        raise RuntimeError("no CUDA device: run with --cpu-smoke")
    tok = build_tokenizer(STANDINS["llama"])
    tok.padding_side = "left"
    if smoke:
        shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512}
        dtype, batch, seq, new, repeats = torch.float32, 2, 16, 4, 1
        layers_sweep, coefs = [1, 2], [2.0, 4.0]
    else:  # Llama-3-8B
        shape = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256}
        dtype, batch, seq, new, repeats = torch.bfloat16, 8, 512, 64, 3
        layers_sweep, coefs = [8, 12, 16, 20], [2.0, 4.0, 6.0, 8.0]
    cfg = transformers.LlamaConfig(**shape, max_position_embeddings=4096, rope_theta=500000.0,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    dev = torch.device("cuda:0" if cuda else "cpu")
    with torch.device(dev):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    n_gpus = torch.cuda.device_count() if cuda else 0
    placement = _spread(model, n_gpus) if n_gpus > 1 else {str(dev): shape["num_hidden_layers"]}
    build_s = time.perf_counter() - t0
    log(f"model built in {build_s:.1f}s on {placement}")
    # every response runs to max_new_tokens, so steered and plain runs do the same work
    model.generation_config.min_new_tokens = new
    lm = LoadedModel(VariantSpec("bench", "random-llama-3-8b-shape", dtype=str(dtype)), model,
                     tok, dev, chat=False)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, len(tok), (batch, seq), generator=g).to(dev)
    mask = torch.ones_like(ids)
    n_layers = shape["num_hidden_layers"]
    res: dict = {"model": {"shape": shape, "dtype": str(dtype), "placement": placement,
                           "params_billion": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
                           "build_seconds": round(build_s, 1)}}

    @torch.no_grad()
    def bare():
        model(input_ids=ids, attention_mask=mask, logits_to_keep=1)

    @torch.no_grad()
    def hooked(to_cpu: bool):
        def run():
            with record(model, range(n_layers), ["residual"], to_cpu=to_cpu):
                model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
        return run

    t_bare = _timed(bare, sync, repeats)
    t_cap = _timed(hooked(False), sync, repeats)
    t_cap_cpu = _timed(hooked(True), sync, repeats)
    res["capture"] = {"batch": batch, "seq": seq, "layers": n_layers, "bare_forward_s": round(t_bare, 4),
                      "capture_all_layers_s": round(t_cap, 4),
                      "capture_all_layers_to_cpu_s": round(t_cap_cpu, 4),
                      "ratio_capture_over_bare": round(t_cap / t_bare, 3),
                      "ratio_capture_to_cpu_over_bare": round(t_cap_cpu / t_bare, 3)}
    log(f"capture: {res['capture']}")

    prompts = [" ".join(["the project is going well ."] * max(1, seq // 32))] * batch
    v = torch.randn(shape["hidden_size"], generator=g)
    v = v / v.norm()
    mid = n_layers // 2

    def plain():
        generate(lm, prompts, max_new_tokens=new, batch_size=batch, formatted=True)

    def steered():
        with steer(model, [SteeringTerm(mid, "residual", v, coef=4.0)]):
            generate(lm, prompts, max_new_tokens=new, batch_size=batch, formatted=True)

    t_plain = _timed(plain, sync, repeats)
    t_steer = _timed(steered, sync, repeats)
    res["steering"] = {"batch": batch, "max_new_tokens": new, "layer": mid,
                       "unsteered_generate_s": round(t_plain, 3), "steered_generate_s": round(t_steer, 3),
                       "ratio_steered_over_unsteered": round(t_steer / t_plain, 3)}
    log(f"steering: {res['steering']}")

    configs = [[SteeringTerm(la, "residual", v, coef=c)] for la in layers_sweep for c in coefs]
    rows = [cfg for cfg in configs for _ in prompts]
    got: dict = {}

    def batched():
        got["batched"] = generate(lm, prompts * len(configs), max_new_tokens=new,
                                  batch_size=len(rows), formatted=True,
                                  batch_context=RowSteering(model, rows))

    def loop():
        outs = []
        for cfg_terms in configs:
            with steer(model, cfg_terms):
                outs += generate(lm, prompts, max_new_tokens=new, batch_size=batch, formatted=True)
        got["loop"] = outs

    t_batched = _timed(batched, sync, 1)
    t_loop = _timed(loop, sync, 1)
    same = sum(a.response_ids == b.response_ids for a, b in zip(got["batched"], got["loop"]))
    res["sweep"] = {"layers": layers_sweep, "coefs": coefs, "questions": batch,
                    "rows": len(rows), "batched_s": round(t_batched, 3), "loop_s": round(t_loop, 3),
                    "speedup_loop_over_batched": round(t_loop / t_batched, 3),
                    "rows_with_identical_tokens": f"{same}/{len(rows)}"}
    if cuda:
        res["max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    log(f"sweep: {res['sweep']}")
    return res


# ------------------------------------------------------------------------------------------
# part 3: what part 2 leaves open -- is the batched sweep's token disagreement only rounding,
# does the out-of-memory halving keep rows aligned, and steering overhead timed interleaved


def _llama(shape: dict, dtype, dev, tok):
    import torch
    import transformers

    cfg = transformers.LlamaConfig(**shape, max_position_embeddings=4096, rope_theta=500000.0,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device(dev):
        return transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()


def _sweep_agreement(model, tok, dev, layers: list[int], coefs: list[float], n_prompts: int,
                     seq: int, new: int, v) -> dict:
    """Batched RowSteering vs one steered run per config: next-token logits and greedy tokens."""
    import torch

    from trait_pipeline.config import VariantSpec
    from trait_pipeline.generation import generate
    from trait_pipeline.models import LoadedModel
    from trait_pipeline.steering_ops import RowSteering, SteeringTerm, steer

    lm = LoadedModel(VariantSpec("bench", "random", dtype=str(model.dtype)), model, tok, dev,
                     chat=False)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, len(tok), (n_prompts, seq), generator=g).to(dev)
    configs = [[SteeringTerm(la, "residual", v, coef=c)] for la in layers for c in coefs]
    rows = [c for c in configs for _ in range(n_prompts)]
    with torch.no_grad():
        with RowSteering(model, rows)(0, len(rows)):
            batched = model(input_ids=ids.repeat(len(configs), 1), logits_to_keep=1).logits[:, -1].float()
        loop = []
        for c in configs:
            with steer(model, c):
                loop.append(model(input_ids=ids, logits_to_keep=1).logits[:, -1].float())
        loop = torch.cat(loop)
    diff = (batched - loop).abs().max().item()
    top2 = loop.topk(2, dim=-1).values
    prompts = [tok.decode(r) for r in ids.tolist()]
    got_b = generate(lm, prompts * len(configs), max_new_tokens=new, batch_size=len(rows),
                     formatted=True, batch_context=RowSteering(model, rows))
    got_l = []
    for c in configs:
        with steer(model, c):
            got_l += generate(lm, prompts, max_new_tokens=new, batch_size=n_prompts, formatted=True)
    same = sum(a.response_ids == b.response_ids for a, b in zip(got_b, got_l))
    first = sum(a.response_ids[:1] == b.response_ids[:1] for a, b in zip(got_b, got_l))
    return {"dtype": str(model.dtype), "rows": len(rows), "max_new_tokens": new,
            "next_token_logits_max_abs_diff": round(diff, 6),
            "logit_scale_std": round(loop.std().item(), 4),
            "median_top1_top2_gap": round((top2[:, 0] - top2[:, 1]).median().item(), 6),
            "same_argmax_next_token": f"{int((batched.argmax(-1) == loop.argmax(-1)).sum())}/{len(rows)}",
            "rows_first_token_equal": f"{first}/{len(rows)}",
            "rows_all_tokens_equal": f"{same}/{len(rows)}"}


def part_extras(out: Path, smoke: bool) -> dict:
    import logging

    import torch

    from trait_pipeline.archs.standins import STANDINS, build_tokenizer
    from trait_pipeline.config import VariantSpec
    from trait_pipeline.generation import generate
    from trait_pipeline.models import LoadedModel
    from trait_pipeline.steering_ops import RowSteering, SteeringTerm, steer

    cuda = torch.cuda.is_available() and not smoke
    if not cuda and not smoke:
        raise RuntimeError("no CUDA device: run with --cpu-smoke")
    dev = torch.device("cuda:0" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    tok = build_tokenizer(STANDINS["llama"])
    tok.padding_side = "left"
    if smoke:
        shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512}
        layers, coefs, n_prompts, seq, new, repeats = [1, 2], [2.0, 4.0], 2, 16, 4, 1
        oom = {"batch": 8, "seq": 16, "new": 2}
    else:
        shape = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256}
        layers, coefs, n_prompts, seq, new, repeats = [8, 16], [4.0, 8.0], 8, 64, 16, 5
        oom = {"batch": 512, "seq": 256, "new": 4}
    g = torch.Generator().manual_seed(0)
    v = torch.randn(shape["hidden_size"], generator=g)
    v = v / v.norm()
    res: dict = {"shape": shape}

    # 1. agreement of the batched sweep with per-config runs, in float32 and bfloat16
    res["sweep_agreement"] = []
    for dtype in (torch.float32, torch.bfloat16):
        model = _llama(shape, dtype, dev, tok)
        row = _sweep_agreement(model, tok, dev, layers, coefs, n_prompts, seq, new, v)
        log(f"sweep agreement: {row}")
        res["sweep_agreement"].append(row)
        if dtype is torch.float32:
            del model
            if cuda:
                torch.cuda.empty_cache()

    # 2. steered vs plain generate, timed interleaved so clock and cache drift hit both alike
    model.generation_config.min_new_tokens = 32 if cuda else 4
    lm = LoadedModel(VariantSpec("bench", "random", dtype="bfloat16"), model, tok, dev, chat=False)
    prompts = [" ".join(["the project is going well ."] * 16)] * 8
    term = [SteeringTerm(shape["num_hidden_layers"] // 2, "residual", v, coef=4.0)]
    n_new = 32 if cuda else 4

    def plain():
        generate(lm, prompts, max_new_tokens=n_new, batch_size=8, formatted=True)

    def steered():
        with steer(model, term):
            generate(lm, prompts, max_new_tokens=n_new, batch_size=8, formatted=True)

    plain(), steered()
    sync()
    tp, ts = [], []
    for _ in range(repeats):
        for fn, acc in ((plain, tp), (steered, ts)):
            t0 = time.perf_counter()
            fn()
            sync()
            acc.append(time.perf_counter() - t0)
    res["steering_interleaved"] = {
        "repeats": repeats, "max_new_tokens": n_new, "plain_s": [round(t, 3) for t in tp],
        "steered_s": [round(t, 3) for t in ts],
        "median_ratio_steered_over_plain": round(statistics.median(ts) / statistics.median(tp), 3),
        "ms_per_token_plain": round(1000 * statistics.median(tp) / n_new, 1)}
    log(f"steering interleaved: {res['steering_interleaved']}")
    model.generation_config.min_new_tokens = None

    # 3. out-of-memory halving: a batch too large for a capped share of the GPU, steered per row
    warnings: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    handler = Catch(level=logging.WARNING)
    logging.getLogger("trait_pipeline.generation").addHandler(handler)
    b = oom["batch"]
    rows = [[SteeringTerm(layers[i % len(layers)], "residual", v, coef=coefs[i % len(coefs)])]
            for i in range(b)]
    ids = torch.randint(10, len(tok), (b, oom["seq"]), generator=g)
    ps = [tok.decode(r) for r in ids.tolist()]
    if cuda:
        torch.cuda.empty_cache()
        used = torch.cuda.memory_allocated()
        total = torch.cuda.get_device_properties(dev).total_memory
        cap = (used + 12 * 2**30) / total  # the weights plus 12 GiB
        torch.cuda.set_per_process_memory_fraction(cap, dev)
    t0 = time.perf_counter()
    try:
        big = generate(lm, ps, max_new_tokens=oom["new"], batch_size=b, formatted=True,
                       batch_context=RowSteering(model, rows))
        t_big = time.perf_counter() - t0
        halvings = [w for w in warnings if "out of memory" in w]
        final = b >> len(halvings)
        # The same rows at the batch size the halving settled on, under the same cap (so the
        # same kernels): the chunks are the same, so every row must match if the halving kept
        # each row's steering with its prompt. The control shifts the steering by one row,
        # which is what a misalignment would look like.
        again = generate(lm, ps, max_new_tokens=oom["new"], batch_size=final, formatted=True,
                         batch_context=RowSteering(model, rows))
        shifted = generate(lm, ps, max_new_tokens=oom["new"], batch_size=final, formatted=True,
                           batch_context=RowSteering(model, rows[1:] + rows[:1]))
    finally:
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, dev)
        logging.getLogger("trait_pipeline.generation").removeHandler(handler)
    same = sum(x.response_ids == y.response_ids for x, y in zip(big, again))
    control = sum(x.response_ids == y.response_ids for x, y in zip(big, shifted))
    res["oom_halving"] = {"requested_batch": b, "seq": oom["seq"], "halvings": len(halvings),
                          "final_batch": final, "seconds": round(t_big, 2),
                          "memory_cap_gib": round(cap * total / 2**30, 1) if cuda else None,
                          "rows_equal_to_a_run_at_the_final_batch": f"{same}/{b}",
                          "control_rows_equal_with_steering_shifted_one_row": f"{control}/{b}"}
    log(f"oom halving: {res['oom_halving']}")
    return res


def part_summary(out: Path, smoke: bool) -> dict:
    parts = {}
    for name in ("demo", "bench", "extras"):
        f = out / f"{name}.json"
        parts[name] = json.loads(f.read_text()) if f.is_file() else {"status": "missing"}
    return {"schema_version": 1, "cpu_smoke": smoke, "environment": environment(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "parts": parts}


PARTS = {"demo": part_demo, "bench": part_bench, "extras": part_extras,
         "summary": part_summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=sorted(PARTS), required=True)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model, CPU only, seconds")
    args = ap.parse_args(argv)
    out = Path(args.out)
    name = "gpu_check" if args.part == "summary" else args.part
    t0 = time.perf_counter()
    try:
        data = PARTS[args.part](out, args.cpu_smoke)
        data = {"status": "ok", **data} if args.part != "summary" else data
    except Exception as exc:  # noqa: BLE001 -- the other parts' figures must survive
        data = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[-2000:]}"}
        log(f"part {args.part} failed: {data['error']}")
    data["seconds"] = round(time.perf_counter() - t0, 1)
    write(out, name, data)
    return 0 if data.get("status", "ok") == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
