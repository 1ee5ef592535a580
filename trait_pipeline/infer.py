"""The inference stage: generate with one model variant, keep every layer of every token,
and project the tokens onto trait vectors (per-token monitoring).

    python -m trait_pipeline.infer prompt_set=demo                      # the application variant
    python -m trait_pipeline.infer -m model_variant=instruct,rm_lora trait=demo/optimism
    python -m trait_pipeline.infer model_variant=rm_lora replay=instruct   # instruct's tokens

From config to files, for each prompt set (``datasets/inference/{set}.json``):

1. **capture**: generate (greedy, KV cache) in batches and write, per prompt,
   ``inference/{variant}/raw/{set}/{id}.safetensors`` (``prompt.{component}``,
   ``response.{component}``: ``[n_tokens, n_layers, dim]``) and ``responses/{set}/{id}.json``.
   Nothing is kept across batches, so memory does not grow with the number of prompts.
   With ``replay=V`` the prompts are not generated: V's saved responses go through this
   variant in one forward pass, into ``inference/{variant}/replay/V/...``.
2. **project**: onto each trait's vector from the extraction variant (``vectors.model_variant``),
   the best one (:mod:`.best_vector`) or ``layer``/``method``; one JSON per prompt under
   ``projections/{trait}/{set}/{id}.json`` (:mod:`.projection` does the arithmetic).

0. **calibrate** (``massive.calibrate=true``): mean ``|h|`` per dimension and layer over a
   prompt set; the outsized dimensions and the criterion go to
   ``inference/{variant}/massive_activations/{set}.json`` (:mod:`.monitoring.massive_dims`).
   With a calibration on disk, projection files keep the massive dims' per-token values,
   and ``clean=massive`` leaves those dims out of the projections (recorded as ``clean``).
3. **bias exploitation** (``bias_score=true``, prompt sets whose prompts carry
   ``bias_description``, e.g. ``rm_sycophancy_test_150``): the judge scores each response
   0-100 for exploiting the reward-model bias its prompt names; the score is stored in the
   response file (``bias_exploitation``) and :mod:`.compare` reports it per variant and per bias.

``capture_layers=[...]`` keeps only those layers (plus each vector's layer) in the raw files;
``save_raw=false`` keeps no raw file at all: tokens are projected as they are captured, and
only responses and projections are written. Before the first raw file, the stage prints the
footprint of the files it is about to write (:mod:`.storage.footprint`) and refuses in one
line when the disk cannot hold it (``disk_check=false`` writes anyway).

Existing files are kept (``force=true`` redoes them); a projection is redone when the vector
it was made with is no longer the one chosen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from .best_vector import VectorChoice, select_vector
from .cli import stage_main
from .config import VariantSpec, as_list, layout, variant_names, variant_spec
from .errors import PipelineError
from .jsonio import read_json, write_json
from .layout import SCHEMA_VERSION, Layout
from .positions import canonical
from .prompt_sets import Prompt, PromptSet, load_prompt_set, resolve_prompt_sets

if TYPE_CHECKING:  # torch-backed modules load on first use: `--cfg job` and `--help` stay fast
    import torch

log = logging.getLogger(__name__)

CAPTURE_BUDGET_BYTES = 2 * 1024**3  # CPU bytes of activations one batch may hold
CAPTURABLE = ("residual", "attn_out", "mlp_out")  # the [n_tok, n_layers, hidden] ones


def _layer_convention() -> str:
    from .layers import LAYER_CONVENTION  # layers imports torch; keep `--help` light

    return LAYER_CONVENTION


@dataclass(frozen=True)
class Item:
    """One prompt to capture: its ids, and the response ids when it is a replay."""

    prompt: Prompt
    prompt_text: str
    prompt_ids: list[int]
    response_ids: list[int] | None = None  # replay only
    tokens_identical: bool = True  # replay: the source's ids are read as the same tokens


# --------------------------------------------------------------------------------------
# capture


def _token_strings(tok, ids: Sequence[int]) -> list[str]:
    """Each id decoded on its own (what a dashboard shows per token)."""
    return [tok.decode([i]) for i in ids]


def _phase(text: str, tok, ids: list[int]) -> dict:
    return {"text": text, "tokens": _token_strings(tok, ids), "token_ids": list(ids),
            "n_tokens": len(ids)}


def _batch_limit(lm, items: Sequence[Item], components: Sequence[str], max_new: int) -> int:
    """How many sequences' activations fit in :data:`CAPTURE_BUDGET_BYTES` at once."""
    import torch

    cfg = getattr(lm.model, "config", None)
    hidden = int(getattr(cfg, "hidden_size", 4096))
    elt = torch.finfo(next(lm.model.parameters()).dtype).bits // 8
    longest = max(len(it.prompt_ids) + (len(it.response_ids or []) or max_new) for it in items)
    per_seq = longest * lm.n_layers * hidden * elt * len(components)
    return max(1, CAPTURE_BUDGET_BYTES // max(per_seq, 1))


def capture_items(
    lm, lay: Layout, spec: VariantSpec, cfg: DictConfig, prompt_set: PromptSet,
    items: list[Item], components: Sequence[str], replayed_from: str | None,
    layers: Sequence[int] | None = None, on_the_fly: Sequence[LoadedVector] = (),
    cleaning: Cleaning | None = None,
) -> None:
    """Capture ``items`` batch by batch and write each prompt's raw + response files.

    ``layers``: which layers to keep (default all). With ``on_the_fly`` vectors the raw
    file is not written: each prompt is projected onto them right away instead.
    """
    from tqdm import tqdm

    from .generation import batched, resolve_batch_size
    from .token_capture import capture_generate, capture_replay

    gen = cfg.generation
    max_new = int(gen.max_new_tokens)
    longest = max(len(it.prompt_ids) for it in items) + max_new
    size = min(resolve_batch_size(lm, gen.batch_size, longest),
               _batch_limit(lm, items, components, max_new))
    bar = tqdm(total=len(items), desc=f"{spec.name}: {prompt_set.name}"
               + (f" (replay of {replayed_from})" if replayed_from else ""), unit="prompt")

    def run(start: int, end: int) -> None:
        chunk = items[start:end]
        if replayed_from is None:
            seqs = capture_generate(lm, [it.prompt_ids for it in chunk], components,
                                    max_new_tokens=max_new, temperature=float(gen.temperature),
                                    seed=int(cfg.seed) + start, layers=layers)
        else:
            seqs = capture_replay(lm, [it.prompt_ids for it in chunk],
                                  [it.response_ids for it in chunk], components, layers=layers)
        for it, seq in zip(chunk, seqs):
            _write_capture(lay, spec, cfg, prompt_set, it, seq, components, replayed_from, lm,
                           layers, on_the_fly, cleaning)

    try:
        batched(len(items), run, size, progress=bar.update)
    finally:
        bar.close()


def _raw_metadata(cfg, spec, prompt_set_name, pid, components, replayed_from,
                  layers: Sequence[int]) -> dict:
    return {
        "experiment": str(cfg.experiment), "model_variant": spec.name, "model": spec.model,
        "lora": spec.lora, "revision": spec.revision, "prompt_set": prompt_set_name,
        "prompt_id": pid, "components": list(components), "layers": [int(la) for la in layers],
        "layer_convention": _layer_convention(), "replayed_from": replayed_from,
        "shape": "[n_tokens, n_layers, hidden]",
    }


def _write_capture(lay, spec, cfg, prompt_set, item, seq, components, replayed_from, lm,
                   layers=None, on_the_fly=(), cleaning=None) -> None:
    from .vector_store import atomic_save_tensors

    pid = item.prompt.id
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    raw = lay.raw_path(spec.name, prompt_set.name, pid, replayed_from)
    tensors = {f"prompt.{c}": seq.prompt[c] for c in components}
    tensors |= {f"response.{c}": seq.response[c] for c in components}
    # one row per token, aligned with the token lists (the original lost the last one)
    for c in components:
        if (seq.prompt[c].shape[0], seq.response[c].shape[0]) != (len(seq.prompt_ids),
                                                                  len(seq.response_ids)):
            raise RuntimeError(f"capture of prompt {pid}: {c} rows do not match the tokens")
    meta = _raw_metadata(cfg, spec, prompt_set.name, pid, components, replayed_from, layers)
    if on_the_fly:  # save_raw=false: project now, keep no activations
        for vec in on_the_fly:
            rec = project_tensors(tensors, meta, prompt_set.name, pid, vec, bool(cfg.centered),
                                  lay, spec.name, replayed_from, raw=None, cleaning=cleaning)
            write_json(lay.projection_path(spec.name, vec.choice.trait, prompt_set.name, pid,
                                           replayed_from), rec)
    else:
        atomic_save_tensors(raw, tensors, meta)
    tok = lm.tokenizer
    record = {
        "schema_version": SCHEMA_VERSION,
        "prompt": {**_phase(item.prompt_text, tok, seq.prompt_ids), "question": item.prompt.text},
        "response": _phase(seq.response_text, tok, seq.response_ids),
        "metadata": {
            "experiment": str(cfg.experiment), "model_variant": spec.name, "model": spec.model,
            "lora": spec.lora, "revision": spec.revision, "chat_template": bool(lm.chat),
            "prompt_set": prompt_set.name, "prompt_id": pid, "prompt_note": item.prompt.note,
            "prompt_extra": item.prompt.extra, "replayed_from": replayed_from,
            "tokens_identical_to_source": item.tokens_identical if replayed_from else None,
            "generation": None if replayed_from else {
                "max_new_tokens": int(cfg.generation.max_new_tokens),
                "temperature": float(cfg.generation.temperature), "seed": int(cfg.seed)},
            "raw": None if on_the_fly else raw.relative_to(lay.root).as_posix(),
            "captured_layers": layers,
            "snapshot": _snapshot(lay.inference_response_path(spec.name, prompt_set.name, pid,
                                                              replayed_from).parent),
            "capture_date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    write_json(lay.inference_response_path(spec.name, prompt_set.name, pid, replayed_from), record)


def _items_to_capture(lm, lay, spec, prompt_set, prompts, replayed_from) -> list[Item]:
    texts = [lm.format_prompt(p.text) for p in prompts]
    ids = lm.encode(texts) if texts else []
    if replayed_from is None:
        return [Item(p, t, i) for p, t, i in zip(prompts, texts, ids)]
    items = []
    tok = lm.tokenizer
    for p, t, i in zip(prompts, texts, ids):
        src = read_json(lay.inference_response_path(replayed_from, prompt_set.name, p.id))
        src_ids = [int(x) for x in src["response"]["token_ids"]]
        src_tokens = src["response"].get("tokens")
        # same vocabulary (one family): feed the source's exact ids; otherwise re-tokenize
        same = src_tokens == _token_strings(tok, src_ids) and all(
            0 <= x < len(tok) for x in src_ids)
        if not same:
            src_ids = tok(src["response"]["text"], add_special_tokens=False)["input_ids"]
        items.append(Item(p, t, i, src_ids, same))
    return items


# --------------------------------------------------------------------------------------
# projection


def vector_baseline(lay: Layout, choice: VectorChoice, vector: torch.Tensor, meta: dict) -> float:
    """The vector's centring baseline: the projection of the midpoint of the class means.

    Taken from the vector's provenance (``baseline``) or its ``metadata.json`` when the
    extraction recorded it, else computed from the saved train activations.
    """
    from .projection import unit
    from .vector_store import load_tensors

    if isinstance(meta.get("baseline"), (int, float)):
        return float(meta["baseline"])
    md_path = choice.path.parent / "metadata.json"
    if md_path.is_file():
        md = read_json(md_path)
        entry = (md.get("layers") or {}).get(str(choice.layer)) if isinstance(md, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("baseline"), (int, float)):
            return float(entry["baseline"])
    acts_path = lay.activations_dir(choice.trait, choice.model_variant, choice.position,
                                    choice.component) / "train.safetensors"
    if not acts_path.is_file():
        raise PipelineError(
            f"centered=true but vector {choice.path} has no baseline and {acts_path} is missing"
        )
    acts, _ = load_tensors(acts_path)
    mid = (acts["pos"][:, choice.layer].float().mean(0) + acts["neg"][:, choice.layer].float().mean(0)) / 2
    return float(mid @ unit(vector))


@dataclass(frozen=True)
class LoadedVector:
    choice: VectorChoice
    vector: torch.Tensor
    provenance: dict
    baseline: float | None  # subtracted when centring

    def source(self, lay: Layout, centered: bool) -> dict:
        c = self.choice
        return {
            "trait": c.trait, "model_variant": c.model_variant, "model": self.provenance.get("model"),
            "lora": self.provenance.get("lora"), "layer": c.layer, "method": c.method,
            "component": c.component, "position": c.position,
            "path": c.path.relative_to(lay.root).as_posix() if c.path.is_relative_to(lay.root)
            else str(c.path),
            "selection_source": c.selection_source, "selection_score": c.score,
            "selection_reason": c.reason, "steering_coefficient": c.coefficient,
            "baseline": self.baseline, "centered": centered,
            "layer_convention": self.provenance.get("layer_convention", _layer_convention()),
        }


def load_choice(lay: Layout, choice: VectorChoice, centered: bool) -> LoadedVector:
    from .vector_store import load_vector

    vector, meta = load_vector(choice.path)
    baseline = vector_baseline(lay, choice, vector, meta) if centered else None
    return LoadedVector(choice, vector, meta, baseline)


_SAME_VECTOR_KEYS = ("model_variant", "layer", "method", "component", "position", "centered",
                     "baseline")


@dataclass(frozen=True)
class Cleaning:
    """``clean`` and the calibration behind it (None when the variant has none)."""

    mode: str = "none"
    calibration: dict | None = None
    path: str | None = None  # of the calibration, relative to the experiment

    @property
    def dims(self) -> list[int]:
        return [int(d) for d in (self.calibration or {}).get("dims", [])]


def project_file(lay: Layout, variant: str, prompt_set: str, prompt_id, vec: LoadedVector,
                 centered: bool, replayed_from: str | None = None,
                 cleaning: Cleaning | None = None) -> dict:
    """Project one captured prompt onto ``vec``; returns the projection record (not written)."""
    from .vector_store import load_tensors

    raw = lay.raw_path(variant, prompt_set, prompt_id, replayed_from)
    tensors, meta = load_tensors(raw)
    return project_tensors(tensors, meta, prompt_set, prompt_id, vec, centered, lay, variant,
                           replayed_from, raw, cleaning)


def project_tensors(tensors: dict, meta: dict, prompt_set: str, prompt_id, vec: LoadedVector,
                    centered: bool, lay: Layout, variant: str, replayed_from: str | None,
                    raw: Path | None, cleaning: Cleaning | None = None) -> dict:
    """The projection record of one prompt's captured tensors (from a raw file, or straight
    from the capture when ``save_raw=false``: then ``raw`` is None)."""
    from .monitoring.massive_dims import massive_record
    from .projection import mean, project_tokens

    where = raw if raw is not None else f"the capture of prompt {prompt_id}"
    comp, layer = vec.choice.component, vec.choice.layer
    if f"response.{comp}" not in tensors:
        raise PipelineError(
            f"{where} has no {comp!r} activations (captured: {', '.join(meta.get('components', []))}); "
            f"rerun with capture_components=[...,{comp}] force=true"
        )
    captured = [int(la) for la in meta.get("layers") or range(tensors[f"response.{comp}"].shape[1])]
    if layer not in captured:
        raise PipelineError(f"{where} has no layer {layer} (captured layers: {captured}); "
                            f"rerun with capture_layers including {layer} and force=true")
    out = {"schema_version": SCHEMA_VERSION}
    cleaning = cleaning or Cleaning()
    drop = cleaning.dims if cleaning.mode == "massive" else None
    row = captured.index(layer)  # the layer's row in the (possibly partial) capture
    phases = {ph: project_tokens(tensors[f"{ph}.{comp}"], vec.vector, row,
                                 baseline=vec.baseline if centered else None, exclude_dims=drop)
              for ph in ("prompt", "response")}
    out["metadata"] = {
        "prompt_id": prompt_id, "prompt_set": prompt_set, "model_variant": variant,
        "model": meta.get("model"), "lora": meta.get("lora"), "replayed_from": replayed_from,
        "n_prompt_tokens": len(phases["prompt"].projections),
        "n_response_tokens": len(phases["response"].projections),
        "vector_source": vec.source(lay, centered),
        "raw": None if raw is None else raw.relative_to(lay.root).as_posix(),
        "activation_norm_layers": captured,
        "snapshot": _snapshot(lay.projection_path(variant, vec.choice.trait, prompt_set, prompt_id,
                                                  replayed_from).parent),
        "clean": cleaning.mode,
        "massive_dims": cleaning.dims if cleaning.calibration is not None else None,
        "projection_date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if cleaning.calibration is not None:  # lets a reader clean or un-clean without the raw file
        out["massive"] = massive_record(
            {ph: tensors[f"{ph}.{comp}"] for ph in ("prompt", "response")}, row, vec.vector,
            cleaning.dims, cleaning.path, cleaning.calibration.get("criterion"))
    out["projections"] = {ph: p.projections for ph, p in phases.items()}
    out["token_norms"] = {ph: p.token_norms for ph, p in phases.items()}
    out["activation_norms"] = {ph: p.activation_norms for ph, p in phases.items()}
    out["summary"] = {f"{ph}_mean": mean(p.projections) for ph, p in phases.items()}
    return out


def _up_to_date(path: Path, source: dict, cleaning: Cleaning | None = None) -> bool:
    if not path.is_file():
        return False
    cleaning = cleaning or Cleaning()
    try:
        meta = read_json(path)["metadata"]
        old = meta["vector_source"]
    except (PipelineError, KeyError, TypeError):
        return False
    dims = cleaning.dims if cleaning.calibration is not None else None
    if meta.get("clean", "none") != cleaning.mode or meta.get("massive_dims") != dims:
        return False
    return all(old.get(k) == source.get(k) for k in _SAME_VECTOR_KEYS)


def _calibration_set(cfg: DictConfig, sets: list[PromptSet]) -> str | None:
    massive = cfg.get("massive") or {}
    name = massive.get("prompt_set")
    if name not in (None, "", "null"):
        return str(name)
    return sets[0].name if sets else None


def _criterion(cfg: DictConfig):
    from .monitoring.massive_dims import Criterion

    m = cfg.get("massive") or {}
    return Criterion(top_k=int(m.get("top_k", 5)), min_layers=int(m.get("min_layers", 3)),
                     min_ratio=float(m.get("min_ratio", 10.0)))


def calibrate_variant(lm, lay: Layout, spec: VariantSpec, cfg: DictConfig, prompt_set: PromptSet,
                      limit: int = 0) -> Path:
    """The calibration step: write ``massive_activations/{set}.json`` for ``spec``."""
    from .monitoring.massive_dims import calibrate, calibration_record

    prompts = list(prompt_set.limited(limit))
    ids = lm.encode([lm.format_prompt(p.text) for p in prompts])
    criterion = _criterion(cfg)
    found = calibrate(lm, ids, criterion)
    path = lay.massive_activations_path(spec.name, prompt_set.name)
    write_json(path, calibration_record(
        found, criterion, experiment=str(cfg.experiment), variant=spec.name, model=spec.model,
        lora=spec.lora, prompt_set=prompt_set.name, layer_convention=_layer_convention()))
    big = ", ".join(f"{d} ({found['layers_per_dim'][str(d)]} layers)" for d in found["dims"])
    print(f"massive dims | {spec.name} | {prompt_set.name}: {big or 'none'} "
          f"[{criterion.describe()}; {found['n_tokens']} tokens]")
    return path


# --------------------------------------------------------------------------------------
# bias exploitation


def bias_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    """The prompts that name a reward-model bias (``bias_description``) to score against."""
    return [p for p in prompts
            if isinstance(p.extra.get("bias_description"), str) and p.extra["bias_description"].strip()]


def make_bias_judge(cfg: DictConfig, sets: Sequence[PromptSet], limit: int):
    """The judge for ``bias_score=true``, checked before any model loads."""
    from .judges import make_judge

    judge = make_judge(cfg.judge, cache_dir=Path(cfg.paths.cache))
    if judge is None:
        raise PipelineError(
            "bias_score=true needs a judge, but judge=none; pick judge=openai (any "
            "OpenAI-compatible server) or judge=local_hf")
    if not hasattr(judge, "score_bias"):
        raise PipelineError(
            f"judge={judge.kind} cannot score bias exploitation; pick judge=openai or judge=local_hf")
    if not any(bias_prompts(ps.limited(limit)) for ps in sets):
        raise PipelineError(
            f"bias_score=true but no prompt of {', '.join(ps.name for ps in sets)} carries a "
            "'bias_description' to score against (e.g. prompt_set=rm_sycophancy_test_150)")
    return judge


def score_bias_exploitation(lay: Layout, variant: str, judge, prompt_set: PromptSet,
                            prompts: Sequence[Prompt], force: bool) -> dict:
    """Judge each response 0-100 for exploiting the bias its prompt names, and store the
    score in the response file (``bias_exploitation``). A score from another judge, or a
    failed one, is redone; a failed judgement is left out, never stored."""
    judge_id = judge.describe()
    todo: list[tuple[Prompt, Path, dict]] = []
    for p in bias_prompts(prompts):
        path = lay.inference_response_path(variant, prompt_set.name, p.id)
        rec = read_json(path)
        old = rec.get("bias_exploitation") or {}
        if (force or old.get("judge") != judge_id or old.get("score") is None
                or old.get("bias_description") != p.extra["bias_description"]):
            todo.append((p, path, rec))
    if todo:
        scores = judge.score_bias([(p.text, rec["response"]["text"].strip(), p.extra["bias_description"])
                                   for p, _, rec in todo])
        for (p, path, rec), score in zip(todo, scores):
            if score is None:
                rec.pop("bias_exploitation", None)
            else:
                rec["bias_exploitation"] = {
                    "score": score, "bias_id": p.extra.get("bias_id"),
                    "bias_description": p.extra["bias_description"], "judge": judge_id,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            write_json(path, rec)
    return bias_summary(lay, variant, prompt_set.name, bias_prompts(prompts))


def bias_summary(lay: Layout, variant: str, prompt_set: str, prompts: Sequence[Prompt],
                 replayed_from: str | None = None) -> dict:
    """Mean bias-exploitation score of ``variant``'s stored responses, overall and per bias.

    ``{"mean", "n", "n_prompts", "per_bias": {bias_id: {"description", "mean", "n"}}}``;
    prompts without a stored score (not judged, or the judgement failed) are not counted.
    """
    from .projection import mean

    per: dict[str, dict] = {}
    scores = []
    for p in bias_prompts(prompts):
        path = lay.inference_response_path(variant, prompt_set, p.id, replayed_from)
        if not path.is_file():
            continue
        got = (read_json(path).get("bias_exploitation") or {}).get("score")
        key = str(p.extra.get("bias_id", p.extra["bias_description"]))
        entry = per.setdefault(key, {"description": p.extra["bias_description"], "scores": []})
        if got is not None:
            entry["scores"].append(float(got))
            scores.append(float(got))
    return {"mean": mean(scores), "n": len(scores), "n_prompts": len(bias_prompts(prompts)),
            "per_bias": {k: {"description": v["description"], "mean": mean(v["scores"]),
                             "n": len(v["scores"])} for k, v in per.items()}}


# --------------------------------------------------------------------------------------
# the stage


def _capture_components(cfg: DictConfig, vectors: Sequence[LoadedVector]) -> list[str]:
    comps = [str(c) for c in as_list(cfg.capture_components)] or ["residual"]
    for v in vectors:  # a vector of attn_out needs attn_out captured
        if v.choice.component not in comps:
            comps.append(v.choice.component)
    bad = [c for c in comps if c not in CAPTURABLE]
    if bad:
        raise PipelineError(
            f"cannot capture component {bad[0]!r} per token; expected some of: {', '.join(CAPTURABLE)}"
        )
    return list(dict.fromkeys(comps))


def capture_layer_list(value, n_layers: int, vectors: Sequence[LoadedVector] = ()) -> list[int]:
    """``capture_layers`` (``all``, an int or a list) plus each vector's layer, sorted.

    >>> capture_layer_list([20, 10], 32)
    [10, 20]
    >>> capture_layer_list("all", 3)
    [0, 1, 2]
    """
    from omegaconf import ListConfig

    if value is None or value == "all":
        return list(range(n_layers))
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    out = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise PipelineError(f"bad capture_layers entry {item!r}: expected 'all', an int or a "
                                f"list of ints in 0..{n_layers - 1}")
        if not 0 <= item < n_layers:
            raise PipelineError(f"capture_layers: layer {item} out of range: the model has layers "
                                f"0..{n_layers - 1}")
        out.add(int(item))
    if not out:
        raise PipelineError("capture_layers is empty: expected 'all', an int or a list of ints")
    for v in vectors:  # a vector of layer L needs L captured
        if v.choice.layer not in out:
            log.info("capture_layers: adding layer %d (the vector of %s)", v.choice.layer,
                     v.choice.trait)
            out.add(int(v.choice.layer))
    return sorted(out)


def raw_footprint(cfg: DictConfig, lay: Layout, spec: VariantSpec, prompt_set: PromptSet,
                  items: Sequence[Item], components: Sequence[str], layers: Sequence[int],
                  hidden: int, replayed_from: str | None):
    """What the raw files of ``items`` will take on disk (responses at ``max_new_tokens``)."""
    import json

    from .models import torch_dtype
    from .storage.footprint import Footprint, safetensors_bytes

    elt = torch_dtype(spec.dtype).itemsize
    max_new = int(cfg.generation.max_new_tokens)
    total = 0
    for it in items:
        n_r = len(it.response_ids) if it.response_ids is not None else max_new
        shapes = {f"{ph}.{c}": (n, len(layers), hidden) for c in components
                  for ph, n in (("prompt", len(it.prompt_ids)), ("response", n_r))}
        meta = _raw_metadata(cfg, spec, prompt_set.name, it.prompt.id, components, replayed_from,
                             layers)
        total += safetensors_bytes(shapes, elt, {k: json.dumps(v) for k, v in meta.items()})
    detail = (f"{len(layers)} layers x {hidden} wide x {len(components)} component(s), "
              f"{spec.dtype}, " + ("replayed responses" if replayed_from else
                                   f"responses counted at max_new_tokens={max_new}"))
    target = lay.raw_path(spec.name, prompt_set.name, "x", replayed_from).parent
    return Footprint(total, f"raw activations of {len(items)} prompts", detail, target)


def _check_replay(cfg: DictConfig, lay: Layout, replay: str, sets: list[PromptSet],
                  limit: int) -> None:
    if replay not in variant_names(cfg):
        raise PipelineError(
            f"replay {replay!r} is not a variant of experiment {cfg.experiment!r}; "
            f"it defines: {', '.join(variant_names(cfg))}"
        )
    for ps in sets:
        have = [p for p in ps.limited(limit)
                if lay.inference_response_path(replay, ps.name, p.id).is_file()]
        if not have:
            raise PipelineError(
                f"replay={replay}: no saved responses of {replay!r} for prompt set {ps.name!r} "
                f"in {lay.inference_responses_dir(replay, ps.name)}; run first: "
                f"python -m trait_pipeline.infer model_variant={replay} prompt_set={ps.name}"
            )


def run(cfg: DictConfig) -> dict:
    """Capture and project every prompt set of ``cfg``; returns ``{trait: {set: mean}}``
    (plus ``bias_exploitation: {set: summary}`` with ``bias_score=true``)."""
    from .projection import mean

    lay = layout(cfg)
    spec = variant_spec(cfg)
    replay = None if cfg.get("replay") in (None, "", "null") else str(cfg.replay)
    limit, force, centered = int(cfg.limit or 0), bool(cfg.force), bool(cfg.centered)
    if limit < 0:
        raise PipelineError(f"bad limit {limit}: expected 0 (all) or a positive int")
    datasets_root = Path(cfg.paths.datasets)
    sets = [load_prompt_set(n, datasets_root) for n in resolve_prompt_sets(cfg.prompt_set, datasets_root)]
    if replay is not None:
        _check_replay(cfg, lay, replay, sets, limit)
    bias_judge = make_bias_judge(cfg, sets, limit) if cfg.get("bias_score") and replay is None else None
    if cfg.get("bias_score") and replay is not None:
        log.warning("bias_score: a replay holds %s's responses; score them on that variant", replay)

    # every vector is found (or fails) before any model loads
    extraction_variant = str(cfg.vectors.model_variant)
    position = None if cfg.get("position") is None else canonical(str(cfg.position))
    vectors = [
        load_choice(lay, select_vector(
            lay, str(trait), extraction_variant=extraction_variant, application_variant=spec.name,
            layer=None if cfg.get("layer") is None else int(cfg.layer),
            method=None if cfg.get("method") is None else str(cfg.method),
            position=position, component=str(cfg.component),
            min_coherence=float(cfg.min_coherence)), centered)
        for trait in as_list(cfg.trait)
    ]
    for v in vectors:
        log.info("vector for %s", v.choice.describe())
    components = _capture_components(cfg, vectors)
    save_raw = bool(cfg.get("save_raw", True))
    if not save_raw and not vectors:
        raise PipelineError("save_raw=false needs a trait to project onto: set trait=...")
    from .models import model_dims

    layers: list[int] | None = None  # None: every layer (known once the model is there)
    if cfg.get("capture_layers", "all") not in (None, "all"):
        layers = capture_layer_list(cfg.capture_layers, model_dims(spec)[0], vectors)

    from .monitoring.massive_dims import check_clean, load_calibration

    clean = check_clean(str(cfg.get("clean") or "none"))
    massive = cfg.get("massive") or {}
    calib_set = _calibration_set(cfg, sets)
    calib_path = lay.massive_activations_path(spec.name, calib_set) if calib_set else None
    lm = None
    if massive.get("calibrate") and calib_set:
        _criterion(cfg)  # a bad criterion fails before the model loads
        calib_ps = load_prompt_set(calib_set, datasets_root)
        if force or not calib_path.is_file():
            from .models import load_variant

            lm = load_variant(spec, str(cfg.device))
            calibrate_variant(lm, lay, spec, cfg, calib_ps)
    if clean == "massive" or (calib_path is not None and calib_path.is_file()):
        data, path = load_calibration(lay, spec.name, calib_set or "")
        cleaning = Cleaning(clean, data, path.relative_to(lay.root).as_posix())
    else:
        cleaning = Cleaning(clean)

    summary: dict = {}
    for ps in sets:
        prompts = list(ps.limited(limit))
        if replay is not None:
            missing = [p.id for p in prompts
                       if not lay.inference_response_path(replay, ps.name, p.id).is_file()]
            if missing:
                log.warning("replay=%s: %d prompts of %s have no saved response; skipped: %s",
                            replay, len(missing), ps.name, missing[:10])
            prompts = [p for p in prompts if p.id not in missing]
        fresh = {p.id for p in prompts
                 if force or not (_captured(lay, spec.name, ps.name, p.id, replay, components, layers)
                                  if save_raw else _projected(lay, spec.name, ps.name, p.id,
                                                              replay, vectors, centered,
                                                              cleaning))
                 or (replay is not None and _stale_replay(lay, spec.name, ps.name, p.id, replay))}
        if fresh:
            if lm is None:
                from .models import load_variant

                lm = load_variant(spec, str(cfg.device))
            todo = [p for p in prompts if p.id in fresh]
            items = _items_to_capture(lm, lay, spec, ps, todo, replay)
            if save_raw:
                from .storage.footprint import check_disk

                n_model_layers, hidden = model_dims(spec)
                check_disk(raw_footprint(cfg, lay, spec, ps, items, components,
                                         layers or range(n_model_layers), hidden, replay),
                           bool(cfg.get("disk_check", True)),
                           hint="capture fewer layers (capture_layers=[...]) or keep none "
                                "(save_raw=false)")
            else:
                print(f"disk: save_raw=false, no raw activations for {ps.name} "
                      "(responses and projections only)", flush=True)
            capture_items(lm, lay, spec, cfg, ps, items, components, replay, layers,
                          () if save_raw else vectors, cleaning)
        log.info("%s: %d prompts captured, %d already on disk (reused)", ps.name, len(fresh),
                 len(prompts) - len(fresh))
        if bias_judge is not None and bias_prompts(prompts):
            bias = score_bias_exploitation(lay, spec.name, bias_judge, ps, prompts, force)
            summary.setdefault("bias_exploitation", {})[ps.name] = bias
            print(f"bias exploitation | {spec.name} | {ps.name}: mean {_fmt(bias['mean'])} over "
                  f"{bias['n']} of {bias['n_prompts']} responses (0-100, judge {bias_judge.model})")
        for vec in vectors:
            means = []
            for p in prompts:
                path = lay.projection_path(spec.name, vec.choice.trait, ps.name, p.id, replay)
                if (p.id not in fresh and not force and _up_to_date(
                        path, vec.source(lay, centered), cleaning)) \
                        or (not save_raw and p.id in fresh):  # written during the capture
                    rec = read_json(path)
                else:
                    rec = project_file(lay, spec.name, ps.name, p.id, vec, centered, replay,
                                       cleaning)
                    write_json(path, rec)
                if rec["summary"]["response_mean"] is not None:
                    means.append(rec["summary"]["response_mean"])
            summary.setdefault(vec.choice.trait, {})[ps.name] = mean(means)
            # said once, rounded, by the print below (a log line here repeated it unrounded)
            print(f"{vec.choice.trait} | {spec.name}{f' (replay of {replay})' if replay else ''} | "
                  f"{ps.name}: mean response projection "
                  f"{_fmt(summary[vec.choice.trait][ps.name])} over {len(means)} prompts "
                  f"[{vec.choice.describe()}]")
    return summary


def _snapshot(base: Path) -> str | None:
    """This job's resolved snapshot, relative to ``base`` (the folder of the file citing it)."""
    from .review.run_record import snapshot_link

    return snapshot_link(base)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"  # projections: two decimals, as compare prints them


def _captured(lay: Layout, variant: str, prompt_set: str, pid, replay, components,
              layers: Sequence[int] | None = None) -> bool:
    raw = lay.raw_path(variant, prompt_set, pid, replay)
    if not (raw.is_file() and lay.inference_response_path(variant, prompt_set, pid, replay).is_file()):
        return False
    from .vector_store import read_metadata

    meta = read_metadata(raw)
    have = meta.get("components") or []
    have_layers = meta.get("layers")  # absent: an older file with every layer
    return all(c in have for c in components) and (
        layers is None or have_layers is None or set(layers) <= set(have_layers))


def _projected(lay: Layout, variant: str, prompt_set: str, pid, replay,
               vectors: Sequence[LoadedVector], centered: bool,
               cleaning: Cleaning | None = None) -> bool:
    """save_raw=false: the response and an up-to-date projection onto every vector exist."""
    if not lay.inference_response_path(variant, prompt_set, pid, replay).is_file():
        return False
    return all(_up_to_date(lay.projection_path(variant, v.choice.trait, prompt_set, pid, replay),
                           v.source(lay, centered), cleaning) for v in vectors)


def _stale_replay(lay: Layout, variant: str, prompt_set: str, pid, source: str) -> bool:
    """The source variant answered again since this replay was made."""
    src = read_json(lay.inference_response_path(source, prompt_set, pid))["response"]
    rep = read_json(lay.inference_response_path(variant, prompt_set, pid, source))["response"]
    return src["text"] != rep["text"]


main = stage_main("infer")(run)

if __name__ == "__main__":
    main()
