"""``python -m trait_pipeline.extract``: trait vectors from one model variant, config to files.

    python -m trait_pipeline.extract                                   # demo: demo/optimism on base
    python -m trait_pipeline.extract model_variant=rm_lora position='response[:]'
    python -m trait_pipeline.extract -m trait=a/b,c/d model_variant=base,instruct
    python -m trait_pipeline.extract force=[vectors] method=[mean_diff,probe]

Six steps, each writing under ``experiments/{experiment}/extraction/{trait}/{model_variant}/``:

1. ``generate``     responses/{pos,neg,metadata}.json        (batched, exact token ids kept)
2. ``vet``          vetting/{scenario,response}_scores.json  (only when a judge is configured)
3. ``activations``  activations/{pos}/{comp}/{train,val}.safetensors + metadata.json
4. ``vectors``      vectors/{pos}/{comp}/{method}/layer{L}.safetensors + metadata.json
5. ``evaluate``     vectors/{pos}/{comp}/evaluation.{json,png} and _evaluation/{variant}.json
6. ``logit_lens``   vectors/{pos}/{comp}/logit_lens.json

A step runs when its output is missing, when ``force`` names it (``force=true``: all), or
when what it was built from changed (each metadata file records an ``inputs`` digest of its
settings and of the upstream content). A rerun with nothing changed writes nothing.

Everything that can be checked (trait files, methods, position, layers, judge) is checked
before the first write, so bad input ends with one ``error: ...`` line and leaves earlier
outputs as they were.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from .cli import stage_main
from .config import METHODS, VariantSpec, as_list, layout, variant_spec
from .errors import PipelineError
from .jsonio import read_json, read_json_for_update, write_json
from .layout import SCHEMA_VERSION, Layout
from .positions import Position, PositionError
from .trait_data import TraitData, load_trait_data

log = logging.getLogger(__name__)

STEPS = ("generate", "vet", "activations", "vectors", "evaluate", "logit_lens")
POLARITIES = ("pos", "neg")
MAX_CPU_GENERATION_BATCH = 128


# ----------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------
def digest(obj: Any) -> str:
    """Short content hash of a JSON-able object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_or_none(path: Path) -> dict | None:
    """A metadata file, or None when it is missing or unreadable (the step then reruns)."""
    try:
        data = read_json(path)
    except PipelineError:
        return None
    return data if isinstance(data, dict) else None


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _config_path() -> str | None:
    """The composed config of this run (Hydra's ``.hydra/config.yaml``), when run by Hydra."""
    from .config import hydra_snapshot_path

    path = hydra_snapshot_path()
    return None if path is None else str(path)


def _snapshot(base: Path) -> str | None:
    """This job's resolved snapshot, relative to ``base`` (the folder of the file citing it)."""
    from .review.run_record import snapshot_link

    return snapshot_link(base)


def parse_force(value: Any) -> set[str]:
    """``false`` -> {}, ``true`` -> every step, ``[vectors]`` / ``vectors`` -> those steps."""
    if value is None or value is False:
        return set()
    if value is True:
        return set(STEPS)
    items = as_list(_plain(value))
    bad = [s for s in items if str(s) not in STEPS]
    if bad:
        raise PipelineError(
            f"bad force value {bad[0]!r}; expected true, false or a list of steps: {', '.join(STEPS)}"
        )
    return {str(s) for s in items}


def parse_steps(value: Any) -> list[str]:
    items = [str(s) for s in as_list(_plain(value))]
    bad = [s for s in items if s not in STEPS]
    if bad:
        raise PipelineError(f"unknown step {bad[0]!r}; expected some of: {', '.join(STEPS)}")
    return [s for s in STEPS if s in items]


def parse_layers(value: Any, n_layers: int) -> list[int]:
    """``all`` / null -> every layer; an int or a list of ints, each in ``0..n_layers-1``."""
    value = _plain(value)
    if value is None or value == "all":
        return list(range(n_layers))
    out = []
    for item in as_list(value):
        if isinstance(item, bool) or not isinstance(item, int):
            raise PipelineError(f"bad layer {item!r}: expected an int in 0..{n_layers - 1} or 'all'")
        if not 0 <= item < n_layers:
            raise PipelineError(f"layer {item} out of range: the model has layers 0..{n_layers - 1}")
        out.append(item)
    if not out:
        raise PipelineError("layers is empty: expected 'all', an int or a list of ints")
    return sorted(set(out))


def model_n_layers(spec: VariantSpec) -> int:
    """Decoder block count from the model's config file (no weights loaded)."""
    from transformers import AutoConfig

    from .models import resolve_ref

    try:
        hf = AutoConfig.from_pretrained(resolve_ref(spec.model), revision=spec.revision)
    except OSError as exc:
        raise PipelineError(f"cannot load the config of {spec.model!r}: {str(exc).splitlines()[0]}") from None
    hf = getattr(hf, "text_config", None) or hf
    return int(hf.num_hidden_layers)


def split_scenarios(n_scenarios: int, val_split: float, seed: int) -> list[int]:
    """Scenario indices of the val split: a seeded sample, so all rollouts (and the contrastive
    partner) of a scenario land on the same side.

    >>> split_scenarios(10, 0.2, 0)
    [6, 9]
    """
    if val_split <= 0 or n_scenarios < 2:
        return []
    n_val = min(n_scenarios - 1, max(1, round(n_scenarios * val_split)))
    order = list(range(n_scenarios))
    random.Random(seed).shuffle(order)
    return sorted(order[:n_val])


# ----------------------------------------------------------------------------------------
# the job: checked settings and where things go
# ----------------------------------------------------------------------------------------
@dataclass
class Job:
    """One (trait, variant, position, component) extraction, every setting checked."""

    cfg: DictConfig
    layout: Layout
    trait: str
    spec: VariantSpec
    position: str  # canonical, e.g. response[:5]
    component: str
    methods: list[str]
    layers: list[int]
    n_layers: int
    steps: list[str]
    force: set[str]
    data: TraitData
    judge: Any = None
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per step
    cpu_timings: dict[str, float] = field(default_factory=dict)  # process CPU seconds per step
    status: dict[str, str] = field(default_factory=dict)
    _lm: Any = None

    # paths --------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.layout.extraction_dir(self.trait, self.spec.name)

    @property
    def responses_dir(self) -> Path:
        return self.layout.responses_dir(self.trait, self.spec.name)

    @property
    def vetting_dir(self) -> Path:
        return self.layout.vetting_dir(self.trait, self.spec.name)

    @property
    def acts_dir(self) -> Path:
        return self.layout.activations_dir(self.trait, self.spec.name, self.position, self.component)

    def vec_dir(self, method: str) -> Path:
        return self.layout.vectors_dir(self.trait, self.spec.name, self.position, self.component, method)

    @property
    def evaluation_path(self) -> Path:
        return self.layout.trait_evaluation_path(self.trait, self.spec.name, self.position, self.component)

    @property
    def plot_path(self) -> Path:
        return self.layout.evaluation_plot_path(self.trait, self.spec.name, self.position, self.component)

    @property
    def lens_path(self) -> Path:
        return self.layout.logit_lens_path(self.trait, self.spec.name, self.position, self.component)

    # the model, loaded on first use --------------------------------------------------------
    @property
    def lm(self):
        if self._lm is None:
            from . import demo_family
            from .models import load_variant

            t0 = time.perf_counter()
            self._lm = load_variant(self.spec, device=str(self.cfg.get("device", "auto")))
            # the first use may build the demo family: reported apart, not as loading
            seconds = time.perf_counter() - t0 - demo_family.build_seconds_since(t0)
            self.timings["load_model"] = round(seconds, 3)
        return self._lm

    def provenance(self) -> dict:
        return {
            "experiment": self.layout.experiment, "trait": self.trait, "model": self.spec.model,
            "revision": self.spec.revision, "lora": self.spec.lora, "model_variant": self.spec.name,
            "component": self.component, "position": self.position,
            "dataset_hash": self.data.hash(),
        }

    def should_run(self, step: str, meta: dict | None, inputs: str, outputs: list[Path]) -> bool:
        """Forced, or an output missing, or built from other inputs than now."""
        if step in self.force:
            return True
        if meta is None or meta.get("inputs") != inputs:
            if meta is not None:
                log.info("%s: inputs changed since the last run; redoing it", step)
            return True
        if not all(p.is_file() for p in outputs):
            return True
        from .vector_store import check_loads

        for p in outputs:  # a skipped step's outputs must still load: never trust a corrupt file
            problem = check_loads(p)
            if problem:
                log.warning("%s: %s; redoing it", step, problem)
                return True
        return False


_NO_JUDGE = object()


def make_job(cfg: DictConfig, trait: str | None = None, judge: Any = _NO_JUDGE) -> Job:
    """Check every setting and input file; nothing is written here.

    ``trait`` picks one trait of ``cfg.trait`` (default: the only one); ``judge`` reuses a
    judge already built for another trait of the same job.
    """
    trait = str(cfg.trait) if trait is None else trait
    spec = variant_spec(cfg)
    try:
        position = str(Position.parse(str(cfg.position)))
    except PositionError as exc:
        raise PipelineError(str(exc)) from None
    methods = [str(m) for m in as_list(_plain(cfg.method))]
    for m in methods:
        if m not in METHODS:
            raise PipelineError(f"unknown method {m!r}; expected one of: {', '.join(METHODS)}")
    if not methods:
        raise PipelineError(f"method is empty; expected some of: {', '.join(METHODS)}")
    steps = parse_steps(cfg.steps)
    force = parse_force(cfg.get("force"))
    val_split = float(cfg.val_split)
    if not 0 <= val_split < 1:
        raise PipelineError(f"bad val_split {val_split}: expected a fraction in [0, 1)")
    gen = cfg.generation
    if int(gen.rollouts) < 1 or int(gen.max_new_tokens) < 1 or float(gen.temperature) < 0:
        raise PipelineError(
            f"bad generation settings (rollouts={gen.rollouts}, max_new_tokens={gen.max_new_tokens}, "
            f"temperature={gen.temperature}): expected rollouts >= 1, max_new_tokens >= 1, temperature >= 0"
        )
    data = load_trait_data(trait, Path(cfg.paths.datasets))
    max_pairs = cfg.get("max_pairs")
    if max_pairs:
        data = data.head(int(max_pairs))
    n_layers = model_n_layers(spec)
    layers = parse_layers(cfg.get("layers", "all"), n_layers)
    if judge is _NO_JUDGE:
        judge = None
        if "vet" in steps:
            from .judges import make_judge

            judge = make_judge(cfg.judge, cache_dir=Path(cfg.paths.cache))
    if "vet" not in steps:
        judge = None
    if judge is not None:
        from .judges import load_trait_spec

        judge.check_trait(load_trait_spec(trait, Path(cfg.paths.datasets)))
    return Job(cfg=cfg, layout=layout(cfg), trait=trait, spec=spec, position=position,
               component=str(cfg.component), methods=methods, layers=layers, n_layers=n_layers,
               steps=steps, force=force, data=data, judge=judge)


# ----------------------------------------------------------------------------------------
# 1. generate
# ----------------------------------------------------------------------------------------
def step_generate(job: Job) -> str:
    gen = job.cfg.generation
    d = job.responses_dir
    outputs = [d / "pos.json", d / "neg.json", d / "metadata.json"]
    settings = {
        "model": job.spec.model, "lora": job.spec.lora, "revision": job.spec.revision,
        "dtype": job.spec.dtype, "use_chat_template": job.spec.use_chat_template,
        "rollouts": int(gen.rollouts), "temperature": float(gen.temperature),
        "max_new_tokens": int(gen.max_new_tokens), "dataset_hash": job.data.hash(),
        "seed": int(job.cfg.seed) if float(gen.temperature) > 0 else None,
    }
    inputs = digest(settings)
    if not job.should_run("generate", _read_or_none(d / "metadata.json"), inputs, outputs):
        return "skipped"
    from tqdm import tqdm

    from .generation import generate

    lm = job.lm
    sides = {"pos": job.data.positive, "neg": job.data.negative}
    prompts, systems, keys = [], [], []
    for rollout in range(int(gen.rollouts)):
        for side, scenarios in sides.items():
            for i, s in enumerate(scenarios):
                prompts.append(s.prompt)
                systems.append(s.system_prompt)
                keys.append((side, i, rollout))
    records: dict[str, list[dict]] = {"pos": [], "neg": []}
    n = len(job.data.positive) * 2
    batch_size = gen.batch_size
    if batch_size in (None, "auto") and lm.device.type == "cpu":
        # on CPU the per-step overhead dominates small models: one big batch is ~3x faster than 32s
        batch_size = min(MAX_CPU_GENERATION_BATCH, n)
    with tqdm(total=len(prompts), desc="generate", unit="resp") as bar:
        outs = []
        for rollout in range(int(gen.rollouts)):  # one call per rollout: its own sampling seed
            sl = slice(rollout * n, (rollout + 1) * n)
            outs += generate(
                lm, prompts[sl], system_prompts=systems[sl], max_new_tokens=int(gen.max_new_tokens),
                temperature=float(gen.temperature), batch_size=batch_size,
                seed=int(job.cfg.seed) + 100_003 * rollout, progress=bar.update,
            )
    eos = lm.tokenizer.eos_token_id
    for (side, i, rollout), g in zip(keys, outs):
        s = sides[side][i]
        ended = bool(g.response_ids) and g.response_ids[-1] == eos
        records[side].append({
            "scenario_idx": i, "rollout_idx": rollout, "line": s.line,
            "system_prompt": s.system_prompt, "prompt": s.prompt, "formatted_prompt": g.prompt_text,
            "response": g.response_text, "prompt_ids": g.prompt_ids, "response_ids": g.response_ids,
            "prompt_token_count": len(g.prompt_ids), "response_token_count": len(g.response_ids),
            "ended_with_eos": ended,
        })
    for side in POLARITIES:  # scenario-major, rollouts of a scenario together
        records[side].sort(key=lambda r: (r["scenario_idx"], r["rollout_idx"]))
        write_json(d / f"{side}.json", records[side])
    write_json(d / "metadata.json", {
        "schema_version": SCHEMA_VERSION, **job.provenance(), "chat_template": lm.chat,
        **settings, "n_pos": len(records["pos"]), "n_neg": len(records["neg"]),
        "n_scenarios": job.data.n_pairs, "has_system_prompts": job.data.has_system_prompts,
        "files": list(job.data.files), "content_digest": digest(records), "inputs": inputs,
        "config": _config_path(), "snapshot": _snapshot(d), "timestamp": _now(),
    })
    return "ran"


def load_responses(job: Job) -> tuple[dict[str, list[dict]], dict]:
    d = job.responses_dir
    meta = _read_or_none(d / "metadata.json")
    if meta is None or not all((d / f"{s}.json").is_file() for s in POLARITIES):
        raise PipelineError(f"no responses in {d}: run the generate step first (steps include generate)")
    return {s: read_json(d / f"{s}.json") for s in POLARITIES}, meta


# ----------------------------------------------------------------------------------------
# 2. vet
# ----------------------------------------------------------------------------------------
def _passes(side: str, score: float | None, vet: DictConfig) -> bool:
    if score is None:
        return False
    return score >= float(vet.pos_threshold) if side == "pos" else score <= float(vet.neg_threshold)


def _judge_in_chunks(fn: Callable[[list], list], items: list, desc: str, size: int = 32) -> list:
    from tqdm import tqdm

    out: list = []
    with tqdm(total=len(items), desc=desc, unit="item") as bar:
        for i in range(0, len(items), size):
            out += fn(items[i: i + size])
            bar.update(len(items[i: i + size]))
    return out


def _vet_file(kind: str, job: Job, scores: dict[str, list], keys: dict[str, list[dict]],
              inputs: str) -> dict:
    vet = job.cfg.vetting
    results, failed, summary = [], {"pos": [], "neg": []}, {"errors": 0}
    for side in POLARITIES:
        passed = 0
        for idx, (score, key) in enumerate(zip(scores[side], keys[side])):
            ok = _passes(side, score, vet)
            passed += ok
            summary["errors"] += score is None
            if not ok:
                failed[side].append(idx)
            results.append({"polarity": side, "idx": idx, **key, "score": score, "passed": ok})
        summary[f"{side}_passed"], summary[f"{side}_failed"] = passed, len(scores[side]) - passed
    return {
        "schema_version": SCHEMA_VERSION, "kind": kind, "trait": job.trait,
        "model_variant": job.spec.name, "judge": job.judge.describe(),
        "thresholds": {"pos_threshold": float(vet.pos_threshold), "neg_threshold": float(vet.neg_threshold)},
        "summary": summary, "failed_indices": failed, "results": results,
        "content_digest": digest([r["score"] for r in results]), "inputs": inputs,
        "config": _config_path(), "snapshot": _snapshot(job.root / "vetting"), "timestamp": _now(),
    }


def step_vet(job: Job) -> str:
    if job.judge is None:
        return "off (judge: none)"
    from .judges import load_trait_spec

    vet = job.cfg.vetting
    tspec = load_trait_spec(job.trait, Path(job.cfg.paths.datasets))
    ran = False
    # scenarios: informational (how clearly each prompt invites the trait)
    s_path = job.vetting_dir / "scenario_scores.json"
    s_inputs = digest({"judge": job.judge.describe(), "data": job.data.hash(),
                       "thresholds": _plain(vet)})
    if job.should_run("vet", _read_or_none(s_path), s_inputs, [s_path]):
        sides = {"pos": job.data.positive, "neg": job.data.negative}
        scores = {side: _judge_in_chunks(lambda xs: job.judge.score_scenarios(tspec, xs),
                                         [s.prompt for s in sc], f"vet scenarios ({side})")
                  for side, sc in sides.items()}
        keys = {side: [{"scenario_idx": i, "line": s.line} for i, s in enumerate(sc)]
                for side, sc in sides.items()}
        write_json(s_path, _vet_file("scenarios", job, scores, keys, s_inputs))
        ran = True
    # responses: the filter the activations step applies
    records, rmeta = load_responses(job)
    r_path = job.vetting_dir / "response_scores.json"
    r_inputs = digest({"judge": job.judge.describe(), "responses": rmeta["content_digest"],
                       "thresholds": _plain(vet)})
    if job.should_run("vet", _read_or_none(r_path), r_inputs, [r_path]):
        words = int(vet.response_words)
        scores = {side: _judge_in_chunks(
            lambda xs: job.judge.score_responses(tspec, xs),
            [(r["prompt"], " ".join(r["response"].split()[:words])) for r in records[side]],
            f"vet responses ({side})") for side in POLARITIES}
        keys = {side: [{"scenario_idx": r["scenario_idx"], "rollout_idx": r["rollout_idx"]}
                       for r in records[side]] for side in POLARITIES}
        write_json(r_path, _vet_file("responses", job, scores, keys, r_inputs))
        ran = True
    return "ran" if ran else "skipped"


# ----------------------------------------------------------------------------------------
# 3. activations
# ----------------------------------------------------------------------------------------
@dataclass
class Example:
    side: str
    idx: int  # index into responses/{side}.json
    scenario_idx: int
    ids: list[int]
    prompt_len: int


def capture_means(lm, examples: list[Example], position: Position, component: str,
                  batch_size: Any = "auto", progress: Callable[[int], None] | None = None,
                  token_norms: dict | None = None):
    """Mean activation over each example's window, every layer at once: [n, n_layers, d] float32.

    One forward pass per batch with hooks on all layers. Rows are left-padded, so window
    indices move by each row's pad offset. Examples must have non-empty windows.
    Given a dict, ``token_norms["per_example"]`` receives [n, n_layers]: each example's mean
    over its window of the per-token norm ‖h_t‖ (what a steering vector is added to; the norm
    of the window mean is smaller for long windows).
    """
    import inspect

    import torch

    from .capture import record
    from .generation import batched, resolve_batch_size

    n_layers = lm.n_layers
    out: list = [None] * len(examples)
    windows = [position.window(e.prompt_len, len(e.ids)) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))  # less padding
    extra = {}
    base = lm.model.get_base_model() if hasattr(lm.model, "get_base_model") else lm.model
    if "logits_to_keep" in inspect.signature(base.forward).parameters:
        extra["logits_to_keep"] = 1  # the logits are not needed: skip most of the unembedding
    size = resolve_batch_size(lm, batch_size, max(len(e.ids) for e in examples)) if examples else 1
    if lm.device.type == "cpu" and batch_size in (None, "auto"):
        size = 64
    state: dict = {}

    def on_output(key, h):
        _, layer = key
        h = h.float()
        state["acc"][:, layer] = torch.einsum("bs,bsd->bd", state["w"], h)
        if token_norms is not None:
            state["tok"][:, layer] = torch.einsum("bs,bs->b", state["w"], h.norm(dim=-1)).cpu()

    def run(start: int, end: int) -> None:
        rows = [order[i] for i in range(start, end)]
        batch = lm.pad_batch([examples[i].ids for i in rows])
        width = batch["input_ids"].shape[1]
        w = torch.zeros(len(rows), width, device=lm.device)
        for j, i in enumerate(rows):
            off = width - len(examples[i].ids)
            lo, hi = windows[i]
            w[j, off + lo: off + hi] = 1.0 / (hi - lo)
        state["w"] = w
        state["acc"] = None
        state["tok"] = torch.zeros(len(rows), n_layers)
        with torch.no_grad(), record(lm.model, range(n_layers), [component], on_output=on_output):
            state["acc"] = _LazyAcc(len(rows), n_layers)
            lm.model(**batch, **extra)
        acc = state["acc"].tensor.cpu()
        for j, i in enumerate(rows):
            out[i] = acc[j]
            tok[i] = state["tok"][j]

    tok: list = [None] * len(examples)
    batched(len(examples), run, size, progress)
    if token_norms is not None:
        token_norms["per_example"] = torch.stack(tok) if tok else torch.zeros(0, n_layers)
    return torch.stack(out) if out else torch.zeros(0, n_layers, 0)


class _LazyAcc:
    """[b, n_layers, d] buffer whose width is learned from the first hooked output."""

    def __init__(self, b: int, n_layers: int) -> None:
        self.b, self.n_layers, self.tensor = b, n_layers, None

    def __setitem__(self, idx, value) -> None:
        import torch

        if self.tensor is None:
            self.tensor = torch.zeros(self.b, self.n_layers, value.shape[-1], device=value.device)
        self.tensor[idx] = value


def _vetting_filter(job: Job, records: dict[str, list[dict]], rmeta: dict) -> tuple[dict, dict]:
    """Indices dropped by response vetting per side, and a description for the metadata."""
    dropped: dict[str, set[int]] = {"pos": set(), "neg": set()}
    if job.judge is None or "vet" not in job.steps:
        return dropped, {"applied": False}
    vet = _read_or_none(job.vetting_dir / "response_scores.json")
    if vet is None:
        raise PipelineError(f"no response vetting in {job.vetting_dir}: run the vet step first")
    failed = {s: set(vet["failed_indices"][s]) for s in POLARITIES}
    info = {"applied": True, "paired": bool(job.cfg.vetting.paired),
            "n_failed_pos": len(failed["pos"]), "n_failed_neg": len(failed["neg"]),
            "vetting_digest": vet.get("content_digest")}
    if job.cfg.vetting.paired:
        # record i of pos and neg are the same (scenario, rollout): drop the pair together
        both = failed["pos"] | failed["neg"]
        dropped = {s: {i for i in both if i < len(records[s])} for s in POLARITIES}
        info["n_excluded_by_pairing"] = len(both) * 2 - len(failed["pos"]) - len(failed["neg"])
    else:
        dropped = failed
    return dropped, info


def step_activations(job: Job) -> str:
    d = job.acts_dir
    records, rmeta = load_responses(job)
    vet_meta = _read_or_none(job.vetting_dir / "response_scores.json") if job.judge else None
    val_split, seed = float(job.cfg.val_split), int(job.cfg.seed)
    settings = {
        "responses": rmeta["content_digest"], "position": job.position, "component": job.component,
        "val_split": val_split, "seed": seed,
        "vetting": (vet_meta or {}).get("content_digest") if job.judge else None,
        "paired": bool(job.cfg.vetting.paired) if job.judge else None,
    }
    inputs = digest(settings)
    outputs = [d / "train.safetensors", d / "metadata.json"] + ([d / "val.safetensors"] if val_split > 0 else [])
    if not job.should_run("activations", _read_or_none(d / "metadata.json"), inputs, outputs):
        return "skipped"
    import torch
    from tqdm import tqdm

    from .layers import LAYER_CONVENTION
    from .vector_store import atomic_save_tensors

    position = Position.parse(job.position)
    dropped, vet_info = _vetting_filter(job, records, rmeta)
    val_scen = set(split_scenarios(job.data.n_pairs, val_split, seed))
    lm = job.lm
    eos = lm.tokenizer.eos_token_id
    examples, skipped = [], []
    for side in POLARITIES:
        for idx, r in enumerate(records[side]):
            if idx in dropped[side]:
                continue
            resp = list(r["response_ids"])
            if resp and resp[-1] == eos:  # the window covers generated text, not the stop token
                resp = resp[:-1]
            ids = list(r["prompt_ids"]) + resp
            lo, hi = position.window(len(r["prompt_ids"]), len(ids))
            if hi <= lo:
                skipped.append({"polarity": side, "idx": idx, "scenario_idx": r["scenario_idx"],
                                "rollout_idx": r["rollout_idx"],
                                "reason": f"empty window {job.position} (response has {len(resp)} tokens)"})
                continue
            examples.append(Example(side, idx, r["scenario_idx"], ids, len(r["prompt_ids"])))
    rows = {split: {side: [e for e in examples if e.side == side and (e.scenario_idx in val_scen) == (split == "val")]
                    for side in POLARITIES} for split in ("train", "val")}
    for side in POLARITIES:
        if not rows["train"][side]:
            raise PipelineError(
                f"no {side} training examples left for {job.trait} at {job.position} "
                f"({len(skipped)} empty windows, vetting dropped {len(dropped[side])}); "
                "loosen vetting thresholds or pick another position"
            )
    _check_activation_footprint(job, rows, val_split)
    with tqdm(total=len(examples), desc=f"capture {job.component}", unit="ex") as bar:
        tok_norms: dict = {}
        acts = capture_means(lm, examples, position, job.component,
                             job.cfg.get("capture_batch_size", "auto"), bar.update, tok_norms)
    index = {id(e): k for k, e in enumerate(examples)}
    tensors = {split: {side: acts[[index[id(e)] for e in rows[split][side]]] if rows[split][side]
                       else torch.zeros(0, acts.shape[1], acts.shape[2])
                       for side in POLARITIES} for split in ("train", "val")}
    train_all = torch.cat([tensors["train"]["pos"], tensors["train"]["neg"]])
    norms = {str(la): round(float(train_all[:, la].norm(dim=-1).mean()), 6) for la in range(acts.shape[1])}
    train_idx = [index[id(e)] for split in ("train",) for side in POLARITIES for e in rows[split][side]]
    per_token = tok_norms["per_example"][train_idx]
    token_norms = {str(la): round(float(per_token[:, la].mean()), 6) for la in range(acts.shape[1])}
    h = hashlib.sha256()
    for split in ("train", "val"):
        for side in POLARITIES:
            h.update(tensors[split][side].numpy().tobytes())
    content = h.hexdigest()[:16]
    atomic_save_tensors(d / "train.safetensors", tensors["train"], {"trait": job.trait, "split": "train"})
    if val_split > 0:
        atomic_save_tensors(d / "val.safetensors", tensors["val"], {"trait": job.trait, "split": "val"})
    else:
        (d / "val.safetensors").unlink(missing_ok=True)  # a stale split must not be evaluated
    write_json(d / "metadata.json", {
        "schema_version": SCHEMA_VERSION, **job.provenance(),
        "n_layers": int(acts.shape[1]), "hidden_dim": int(acts.shape[2]),
        "layer_convention": LAYER_CONVENTION, "dtype": "float32", "reduction": "mean over window",
        "counts": {split: {side: len(rows[split][side]) for side in POLARITIES} for split in rows},
        "rows": {split: {side: [e.idx for e in rows[split][side]] for side in POLARITIES} for split in rows},
        "split": {"val_split": val_split, "seed": seed, "grouped_by": "scenario_idx",
                  "val_scenarios": sorted(val_scen)},
        "skipped": skipped, "vetting": vet_info, "activation_norms": norms, "token_norms": token_norms,
        "content_digest": content, "inputs": inputs, "config": _config_path(), "snapshot": _snapshot(d),
        "timestamp": _now(),
    })
    return "ran"


def _check_activation_footprint(job: Job, rows: dict, val_split: float) -> None:
    """Print what train/val.safetensors will take (float32 window means) and refuse when the
    disk cannot hold them (``disk_check=false`` writes anyway)."""
    import json

    from .models import model_dims
    from .storage.footprint import Footprint, check_disk, safetensors_bytes

    n_layers, hidden = model_dims(job.spec)
    total = 0
    for split in ("train", "val") if val_split > 0 else ("train",):
        shapes = {side: (len(rows[split][side]), n_layers, hidden) for side in POLARITIES}
        meta = {"trait": json.dumps(job.trait), "split": json.dumps(split)}
        total += safetensors_bytes(shapes, 4, meta)
    n = sum(len(v) for split in rows.values() for v in split.values())
    check_disk(Footprint(total, f"activations of {n} examples",
                         f"{n_layers} layers x {hidden} wide, float32 window means", job.acts_dir),
               bool(job.cfg.get("disk_check", True)))


def load_activations(job: Job) -> tuple[dict[str, dict[str, Any]], dict]:
    from .vector_store import load_tensors

    d = job.acts_dir
    meta = _read_or_none(d / "metadata.json")
    if meta is None or not (d / "train.safetensors").is_file():
        raise PipelineError(f"no activations in {d}: run the activations step first")
    out = {"train": load_tensors(d / "train.safetensors")[0]}
    if (d / "val.safetensors").is_file():
        out["val"] = load_tensors(d / "val.safetensors")[0]
    return out, meta


# ----------------------------------------------------------------------------------------
# 4. vectors
# ----------------------------------------------------------------------------------------
def step_vectors(job: Job) -> str:
    from tqdm import tqdm

    from .vector_methods import compute, midpoint_baseline
    from .vector_store import save_vector

    acts, ameta = load_activations(job)
    seed = int(job.cfg.seed)
    ran = []
    for method in job.methods:
        d = job.vec_dir(method)
        inputs = digest({"activations": ameta["content_digest"], "method": method, "seed": seed,
                         "layers": job.layers})
        outputs = [d / "metadata.json"] + [d / f"layer{la}.safetensors" for la in job.layers]
        meta = _read_or_none(d / "metadata.json")
        if not job.should_run("vectors", meta, inputs, outputs):
            if _vectors_match(d, job.layers, meta):
                continue
            log.warning("vectors %s: files differ from their recorded digest; redoing them", method)
        per_layer, h = {}, hashlib.sha256()
        for la in tqdm(job.layers, desc=f"vectors {method}", unit="layer", leave=False):
            pos, neg = acts["train"]["pos"][:, la], acts["train"]["neg"][:, la]
            tv = compute(method, pos, neg, seed=seed + la)
            info = {"norm": tv.raw_norm, "baseline": midpoint_baseline(pos, neg, tv.vector), **tv.extras}
            save_vector(d / f"layer{la}.safetensors", tv.vector, {
                **job.provenance(), "layer": la, "method": method, "seed": seed + la,
                "n_train_pos": len(pos), "n_train_neg": len(neg),
                "activations_digest": ameta["content_digest"], **info,
            })
            per_layer[str(la)] = info
            h.update(tv.vector.float().numpy().tobytes())
        write_json(d / "metadata.json", {
            "schema_version": SCHEMA_VERSION, **job.provenance(), "method": method, "seed": seed,
            "layers": per_layer, "content_digest": h.hexdigest()[:16], "inputs": inputs,
            "config": _config_path(), "snapshot": _snapshot(d), "timestamp": _now(),
        })
        ran.append(method)
    return f"ran ({', '.join(ran)})" if ran else "skipped"


def _vectors_match(d: Path, layers: list[int], meta: dict) -> bool:
    """Whether the vector files hash to the ``content_digest`` their metadata records."""
    from .vector_store import load_vector

    h = hashlib.sha256()
    try:
        for la in layers:
            h.update(load_vector(d / f"layer{la}.safetensors")[0].float().numpy().tobytes())
    except PipelineError:
        return False
    return h.hexdigest()[:16] == meta.get("content_digest")


def load_method_vectors(job: Job, method: str) -> tuple[dict[int, Any], dict]:
    from .vector_store import load_vector

    d = job.vec_dir(method)
    meta = _read_or_none(d / "metadata.json")
    if meta is None:
        raise PipelineError(f"no {method} vectors in {d}: run the vectors step first")
    return {la: load_vector(d / f"layer{la}.safetensors")[0] for la in job.layers}, meta


# ----------------------------------------------------------------------------------------
# 5. evaluate
# ----------------------------------------------------------------------------------------
def step_evaluate(job: Job) -> str:
    """Score each method's vectors on val; other methods' rows already on file are kept."""
    acts, ameta = load_activations(job)
    if "val" not in acts or not all(len(acts["val"][s]) for s in POLARITIES):
        return "off (no val split)"
    vecs = {m: load_method_vectors(job, m) for m in job.methods}
    ev_cfg = _evaluation_settings(job)
    inputs = {m: digest({"activations": ameta["content_digest"], "vectors": meta["content_digest"],
                         "layers": job.layers, "null": ev_cfg}) for m, (_, meta) in vecs.items()}
    out, png = job.evaluation_path, job.plot_path
    variant_file = job.layout.evaluation_path(job.spec.name)
    done = (_read_or_none(out) or {}).get("inputs", {})
    in_variant = _variant_entry(variant_file, job).get("inputs", {})
    todo = [m for m in job.methods if "evaluate" in job.force or done.get(m) != inputs[m]
            or in_variant.get(m) != inputs[m]]
    if not todo and png.is_file():
        return "skipped"
    from .evaluation import (
        add_combined_scores,
        add_null_scores,
        best_per_trait,
        null_distribution,
        score_vector,
        small_val_warning,
    )

    n_vp, n_vn = len(acts["val"]["pos"]), len(acts["val"]["neg"])
    warning = small_val_warning(n_vp, n_vn)
    if warning:
        log.warning("%s", warning)
    nulls = {}
    for la in sorted({la for m in todo for la in vecs[m][0]}):
        # one seed per layer, so each layer's null is its own sample but reruns repeat it
        nulls[la] = null_distribution(
            acts["train"]["pos"][:, la], acts["train"]["neg"][:, la],
            acts["val"]["pos"][:, la], acts["val"]["neg"][:, la],
            n=ev_cfg["null_directions"], seed=ev_cfg["seed"] * 1_000_003 + la)
    rows = []
    for method in todo:
        for la, v in vecs[method][0].items():
            s = score_vector(acts["train"]["pos"][:, la], acts["train"]["neg"][:, la],
                             acts["val"]["pos"][:, la], acts["val"]["neg"][:, la], v)
            row = {"trait": job.trait, "method": method, "layer": la,
                   "component": job.component, "position": job.position,
                   **_rounded(s.as_dict())}
            rows.append(add_null_scores(row, nulls[la], ev_cfg["alpha"]))
    old = read_json_for_update(out) or {}  # other methods' rows: never drop a malformed file
    kept = [r for r in old.get("results", []) if r["method"] not in todo]
    all_rows = add_combined_scores(kept + rows)
    for r in all_rows:
        r["combined_score"] = round(r["combined_score"], 4)
    all_rows.sort(key=lambda r: (METHODS.index(r["method"]), r["layer"]))
    method_inputs = {**{m: i for m, i in old.get("inputs", {}).items() if m not in todo},
                     **{m: inputs[m] for m in todo}}
    null_block = {**old.get("null", {}).get("layers", {}),
                  **{str(la): n.band() for la, n in nulls.items()}}
    best = best_per_trait(all_rows).get(job.trait)
    write_json(out, {
        "schema_version": SCHEMA_VERSION, **job.provenance(), "n_layers": job.n_layers,
        "counts": ameta["counts"], "activation_norms": ameta["activation_norms"],
        "best": best,
        "best_note": None if best else "no vector beats the null of random directions "
                                        f"(p <= {ev_cfg['alpha']})",
        "null": {**ev_cfg, "statistic": "signed val effect size",
                 "layers": dict(sorted(null_block.items(), key=lambda kv: int(kv[0])))},
        "warnings": [warning] if warning else [],
        "results": all_rows,
        "inputs": method_inputs, "config": _config_path(), "snapshot": _snapshot(out.parent),
        "timestamp": _now(),
    })
    write_heatmap(png, all_rows, job)
    merge_variant_evaluation(variant_file, job, rows, todo, ameta, inputs, null_block)
    return f"ran ({', '.join(todo)})"


def _evaluation_settings(job: Job) -> dict:
    """The null's settings (``evaluation:`` in extract.yaml); they key the step's inputs."""
    from .evaluation import ALPHA, NULL_DIRECTIONS

    ev = job.cfg.get("evaluation") or {}
    n = int(ev.get("null_directions", NULL_DIRECTIONS))
    alpha = float(ev.get("alpha", ALPHA))
    if n < 1:
        raise PipelineError(f"evaluation.null_directions={n}: expected an integer >= 1")
    if not 0 < alpha < 1:
        raise PipelineError(f"evaluation.alpha={alpha}: expected a number between 0 and 1")
    return {"null_directions": n, "alpha": alpha, "seed": int(job.cfg.seed)}


def _rounded(score: dict) -> dict:
    """Scores at the precision they carry (4 decimals), without float noise in the JSON."""
    out = {}
    for k, v in score.items():
        if isinstance(v, float):
            out[k] = round(v, 4)
        elif isinstance(v, list):
            out[k] = [round(x, 4) for x in v]
        else:
            out[k] = v
    return out


def _entry_key(job: Job) -> dict:
    return {"trait": job.trait, "position": job.position, "component": job.component}


def _variant_entry(path: Path, job: Job) -> dict:
    data = read_json_for_update(path)
    for e in (data or {}).get("entries", []):
        if {k: e.get(k) for k in ("trait", "position", "component")} == _entry_key(job):
            return e
    return {}


def merge_variant_evaluation(path: Path, job: Job, rows: list[dict], methods: list[str],
                             ameta: dict, inputs: dict[str, str],
                             null_bands: dict | None = None) -> None:
    """Put this (trait, position, component)'s rows of ``methods`` into ``_evaluation/{variant}.json``.

    Parallel sweep jobs write the same file, so read-modify-write happens under a lock.
    """
    from filelock import FileLock

    from .evaluation import add_combined_scores, best_per_trait

    path.parent.mkdir(parents=True, exist_ok=True)
    key = _entry_key(job)
    with FileLock(str(path) + ".lock"):
        data = read_json_for_update(path) or {}  # other traits' rows: refuse a malformed file
        same = lambda r: {k: r.get(k) for k in key} == key
        old_rows = [r for r in data.get("results", []) if not (same(r) and r["method"] in methods)]
        entries = [e for e in data.get("entries", []) if not same(e)]
        prev = next((e for e in data.get("entries", []) if same(e)), {})
        entries.append({**key, "n_layers": job.n_layers, "counts": ameta["counts"],
                        "activation_norms": ameta["activation_norms"],
                        "inputs": {**prev.get("inputs", {}), **{m: inputs[m] for m in methods}},
                        "null_band": null_bands if null_bands is not None else prev.get("null_band"),
                        "config": _config_path(), "snapshot": _snapshot(path.parent),
                        "timestamp": _now()})
        all_rows = add_combined_scores(old_rows + [dict(r) for r in rows])
        all_rows.sort(key=lambda r: (r["trait"], r["position"], r["component"],
                                     METHODS.index(r["method"]) if r["method"] in METHODS else 99,
                                     r["layer"]))
        entries.sort(key=lambda e: (e["trait"], e["position"], e["component"]))
        write_json(path, {
            "schema_version": SCHEMA_VERSION, "experiment": job.layout.experiment,
            "model_variant": job.spec.name, "model": job.spec.model, "lora": job.spec.lora,
            "layer_convention": _layer_convention(), "best": best_per_trait(all_rows),
            "entries": entries, "results": all_rows,
        })


def _layer_convention() -> str:
    from .layers import LAYER_CONVENTION

    return LAYER_CONVENTION


def write_heatmap(path: Path, rows: list[dict], job: Job) -> None:
    """Layer x method heatmaps of val accuracy and effect size, written atomically."""
    import os
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    layers = sorted({r["layer"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.3 * len(layers), 1.6 + 0.9 * len(methods)),
                             squeeze=False)
    for ax, metric, label in zip(axes[0], ("val_accuracy", "val_effect_size"),
                                 ("val accuracy", "|Cohen's d| (val)")):
        grid = np.full((len(methods), len(layers)), np.nan)
        for r in rows:
            grid[methods.index(r["method"]), layers.index(r["layer"])] = r[metric]
        im = ax.imshow(grid, aspect="auto", cmap="viridis",
                       vmin=0.0 if metric == "val_effect_size" else 0.5,
                       vmax=1.0 if metric == "val_accuracy" else None)
        ax.set_yticks(range(len(methods)), methods)
        ax.set_xticks(range(len(layers)), [str(la) for la in layers], fontsize=7)
        ax.set_xlabel("layer (output of decoder block L)")
        ax.set_title(label)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"{job.trait} · {job.spec.name} · {job.position} · {job.component}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, metadata={"Software": None})
        from .safety.files import apply_umask

        apply_umask(tmp)  # mkstemp makes 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------------
# 6. logit lens
# ----------------------------------------------------------------------------------------
def step_logit_lens(job: Job) -> str:
    """Top tokens of each method's vectors at ~40 % and ~90 % depth; other methods kept."""
    vecs = {m: load_method_vectors(job, m) for m in job.methods if m != "random_baseline"}
    if not vecs:
        return "off (no methods)"
    out = job.lens_path
    old = read_json_for_update(out) or {}
    inputs = {m: digest({"vectors": meta["content_digest"], "layers": job.layers})
              for m, (_, meta) in vecs.items()}
    todo = [m for m in vecs if "logit_lens" in job.force or old.get("inputs", {}).get(m) != inputs[m]]
    if not todo:
        return "skipped"
    from .logit_lens import lens_layers, top_tokens, word_token_mask

    lm = job.lm
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    mask = word_token_mask(lm.tokenizer, vocab)
    methods = {m: e for m, e in old.get("methods", {}).items() if m not in todo}
    for method in todo:
        by_layer = vecs[method][0]
        entry = {}
        for depth, target in lens_layers(job.n_layers).items():
            la = min(job.layers, key=lambda x: abs(x - target))  # nearest extracted layer
            entry[depth] = {"layer": la, "pct": round(100 * la / job.n_layers),
                            **top_tokens(lm.model, lm.tokenizer, by_layer[la], k=10, mask=mask)}
        methods[method] = entry
    write_json(out, {"schema_version": SCHEMA_VERSION, **job.provenance(), "n_layers": job.n_layers,
                     "methods": methods,
                     "inputs": {**{m: i for m, i in old.get("inputs", {}).items() if m not in todo},
                                **{m: inputs[m] for m in todo}},
                     "config": _config_path(), "snapshot": _snapshot(out.parent), "timestamp": _now()})
    return f"ran ({', '.join(todo)})"


# ----------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------
STEP_FUNCS: dict[str, Callable[[Job], str]] = {
    "generate": step_generate, "vet": step_vet, "activations": step_activations,
    "vectors": step_vectors, "evaluate": step_evaluate, "logit_lens": step_logit_lens,
}


def run(cfg: DictConfig) -> dict:
    """Run the configured steps for one trait and variant; return the summary.

    ``trait=[a,b,c]`` runs them all in this one job, loading the model once: every trait is
    checked before the first write, then each runs in turn into its own folder. The result is
    ``{"traits": {trait: summary}}`` (``-m trait=a,b`` still makes one job per trait).
    """
    traits = [str(t) for t in as_list(_plain(cfg.trait))]
    if len(traits) <= 1:
        summary = run_job(make_job(cfg, traits[0] if traits else None))
        _write_run_summary(summary)
        return summary
    if len(set(traits)) != len(traits):
        raise PipelineError(f"trait lists {traits[0]!r} twice or more: {traits}")
    first = make_job(cfg, traits[0])
    jobs = [first] + [make_job(cfg, t, judge=first.judge) for t in traits[1:]]
    summaries: dict[str, dict] = {}
    for job in jobs:
        job._lm = first._lm  # loaded by the first trait that needs it, then shared
        summaries[job.trait] = run_job(job)
        first._lm = job._lm
    out = {"traits": summaries}
    _write_run_summary(out)
    return out


def run_job(job: Job) -> dict:
    """The configured steps of one trait; returns its summary (also printed)."""
    t_start = time.perf_counter()
    log.info("extract %s on %s (%s) -> %s", job.trait, job.spec.name, job.spec.model, job.root)
    from filelock import FileLock

    job.root.mkdir(parents=True, exist_ok=True)
    for step in job.steps:
        t0, c0 = time.perf_counter(), time.process_time()
        if step in ("generate", "vet"):
            # shared by every position/component of this trait and variant: one writer at a time
            with FileLock(str(job.root / ".responses.lock")):
                job.status[step] = STEP_FUNCS[step](job)
        else:
            job.status[step] = STEP_FUNCS[step](job)
        job.timings[step] = round(time.perf_counter() - t0, 3)
        job.cpu_timings[step] = round(time.process_time() - c0, 3)  # wall time lies on a shared machine
        log.info("%s: %s (%.1fs)", step, job.status[step], job.timings[step])
    total = time.perf_counter() - t_start
    from . import demo_family

    if demo_family.LAST_BUILD_SECONDS is not None:
        # a one-off cost of the first run: reported on its own, not inside the stage's total
        # (which counts only the part of it that ran after t_start: the config checks may
        # have built it before)
        job.timings["demo_family_build"] = round(demo_family.LAST_BUILD_SECONDS, 3)
        total -= demo_family.build_seconds_since(t_start)
    job.timings["total"] = round(total, 3)
    summary = make_summary(job)
    print(format_summary(summary), flush=True)
    return summary


def make_summary(job: Job) -> dict:
    summary: dict[str, Any] = {
        "trait": job.trait, "model_variant": job.spec.name, "model": job.spec.model,
        "lora": job.spec.lora, "position": job.position, "component": job.component,
        "output_dir": str(job.root), "steps": job.status, "timings": job.timings,
        "cpu_timings": job.cpu_timings,
    }
    ameta = _read_or_none(job.acts_dir / "metadata.json")
    if ameta:
        summary["counts"] = ameta.get("counts")
        summary["skipped_examples"] = len(ameta.get("skipped", []))
    ev = _read_or_none(job.evaluation_path)
    if ev:
        per_method = {}
        for r in ev.get("results", []):
            cur = per_method.get(r["method"])
            if cur is None or (r["val_accuracy"], r["val_effect_size"]) > (cur["val_accuracy"], cur["val_effect_size"]):
                per_method[r["method"]] = r
        summary["best_per_method"] = {
            m: {k: r[k] for k in ("layer", "val_accuracy", "val_effect_size", "val_accuracy_ci",
                                  "val_effect_size_ci", "p_value", "null_percentile") if k in r}
            for m, r in per_method.items()}
        summary["best"] = ev.get("best")
        summary["best_note"] = ev.get("best_note")
        summary["null"] = {k: v for k, v in (ev.get("null") or {}).items() if k != "layers"}
        summary["warnings"] = ev.get("warnings", [])
    lens = _read_or_none(job.lens_path)
    if lens and summary.get("best") and summary["best"]["method"] in lens.get("methods", {}):
        late = lens["methods"][summary["best"]["method"]]["late"]
        summary["logit_lens"] = {"layer": late["layer"],
                                 "toward": [t["token"] for t in late["toward"][:6]],
                                 "away": [t["token"] for t in late["away"][:6]]}
    return summary


def format_summary(s: dict) -> str:
    """The one-screen report printed at the end of a job."""
    lines = [f"== extract {s['trait']} · {s['model_variant']} ({s['model']}"
             + (f" + {s['lora']}" if s.get("lora") else "") + f") · {s['position']} · {s['component']}",
             f"   output: {s['output_dir']}"]
    for step, status in s["steps"].items():
        lines.append(f"   {step:<12} {status:<28} {s['timings'].get(step, 0):7.2f}s"
                     f"  (cpu {s['cpu_timings'].get(step, 0):.2f}s)")
    if "load_model" in s["timings"]:
        lines.append(f"   {'(model load)':<12} {'':<28} {s['timings']['load_model']:7.2f}s")
    lines.append(f"   {'total':<12} {'':<28} {s['timings']['total']:7.2f}s")
    if "demo_family_build" in s["timings"]:
        lines.append(f"   (plus the one-off demo family build: {s['timings']['demo_family_build']:.0f}s)")
    if s.get("counts"):
        c = s["counts"]
        lines.append(f"   examples: train {c['train']['pos']}+/{c['train']['neg']}-, "
                     f"val {c['val']['pos']}+/{c['val']['neg']}-, skipped {s.get('skipped_examples', 0)}")
    for w in s.get("warnings") or []:
        lines.append(f"   warning: {w}")
    if s.get("null"):
        lines.append(f"   null: {s['null']['null_directions']} random directions per layer;"
                     f" [95 % intervals], p = share of the null doing as well")
    for m, r in (s.get("best_per_method") or {}).items():
        line = (f"   {m:<16} best layer {r['layer']:>3}: val acc {r['val_accuracy']:.3f}"
                + (" [{:.2f}, {:.2f}]".format(*r["val_accuracy_ci"]) if "val_accuracy_ci" in r else "")
                + f", d {r['val_effect_size']:.2f}"
                + (" [{:.2f}, {:.2f}]".format(*r["val_effect_size_ci"]) if "val_effect_size_ci" in r else ""))
        if "p_value" in r:
            line += f", p {r['p_value']:.3f} (null pct {r['null_percentile']:.0f})"
        lines.append(line)
    if s.get("best"):
        b = s["best"]
        lines.append(f"   best vector: {b['method']} layer {b['layer']} (combined {b['combined_score']:.3f})")
    elif s.get("best_note"):
        lines.append(f"   best vector: none ({s['best_note']})")
    if s.get("logit_lens"):
        ll = s["logit_lens"]
        lines.append(f"   logit lens L{ll['layer']}: toward {' '.join(ll['toward'])} | away {' '.join(ll['away'])}")
    return "\n".join(lines)


def _write_run_summary(summary: dict) -> None:
    """The summary beside Hydra's config snapshot of this run (runs/<id>/summary.json)."""
    cfg_path = _config_path()
    if cfg_path:
        write_json(Path(cfg_path).parent.parent / "summary.json", summary)


main = stage_main("extract")(run)

if __name__ == "__main__":
    main()
