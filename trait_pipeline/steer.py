"""The steering stage: validate a trait vector by steering generation with it and judging
the answers.

    python -m trait_pipeline.steer                                   # demo, adaptive search
    python -m trait_pipeline.steer model_variant=rm_lora -m layer=10,20
    python -m trait_pipeline.steer layer=[8,10,12] coef=[2,4,8]      # a grid, one batched generate
    python -m trait_pipeline.steer layer=[10,12] multi_layer=weighted

From config to ``results.json`` (conf/steer.yaml):

1. :func:`settings` checks the stage's own keys; :func:`load_vectors` finds every vector
   (of the *extraction* variant, ``vectors.model_variant``) before any model loads.
2. The steered model is ``model_variant`` (the *application* variant); a judge comes from
   the ``judge`` group.
3. The baseline (no steering) is generated and judged once per (variant, questions,
   generation settings, judge) and stored in results.json under its key.
4. Each (layer, coef) config becomes a :class:`Plan`; every plan not already in results.json
   is evaluated in ONE batched ``generate`` call with per-row steering
   (:class:`~trait_pipeline.steering_ops.RowSteering`), judged, and added under the lock of
   :class:`~trait_pipeline.results_store.ResultsStore`. ``coef: null`` runs the adaptive
   search of :mod:`trait_pipeline.coef_search`, one batched generate per step.
5. A summary (best coef per layer with coherence >= ``min_coherence``, delta over baseline)
   is printed and a layer x coef heatmap is written beside results.json (``heatmap.png``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .cli import stage_main
from .config import as_list, layout, variant_spec
from .errors import PipelineError
from .layout import STEERING_PROMPT_SET, Layout, coef_label
from .positions import canonical

log = logging.getLogger(__name__)

STEER_POSITIONS = ("all", "response")
MULTI_LAYER_MODES = ("weighted", "orthogonal")
ACT_NORM_QUESTIONS = 3  # prompts used to estimate a layer's activation norm on the steered model


# --- settings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SteerSettings:
    """The stage's own keys of conf/steer.yaml, checked.

    >>> # s = settings(cfg); s.layers, s.coefs
    >>> # ([10, 20], None)       # coef: null -> adaptive search
    """

    trait: str
    layers: list[int]
    coefs: list[float] | None  # None: adaptive search
    method: str
    position: str
    component: str
    prompt_set: str
    vector_variant: str
    questions: int
    steer_positions: str
    ablate: bool
    multi_layer: str | None
    global_scale: float
    min_coherence: float
    max_new_tokens: int
    temperature: float
    batch_size: Any
    seed: int
    device: str
    search: dict = field(default_factory=dict)


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise PipelineError(f"bad {key} {value!r}: expected an integer")
    return int(value)


def _num(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PipelineError(f"bad {key} {value!r}: expected a finite number")
    return float(value)


def settings(cfg: DictConfig, trait: str | None = None) -> SteerSettings:
    """Read and check the stage keys; every problem is a one-line :class:`PipelineError`.

    ``trait`` picks one trait of a job over several (``trait=[a,b]``); default: ``cfg.trait``.
    """
    layers = [_int(v, "layer") for v in as_list(cfg.layer)]
    if not layers:
        raise PipelineError("layer is empty: expected an int or a list, e.g. layer=10 or layer=[10,20]")
    coef = cfg.get("coef")
    coefs = None if coef is None else [_num(c, "coef") for c in as_list(coef)]
    if coefs is not None and not coefs:
        raise PipelineError("coef is an empty list: expected null (search), a number, or a list")
    steer_positions = str(cfg.get("steer_positions", "all"))
    if steer_positions not in STEER_POSITIONS:
        raise PipelineError(
            f"bad steer_positions {steer_positions!r}; expected one of: {', '.join(STEER_POSITIONS)}")
    multi = cfg.get("multi_layer")
    if multi is not None and str(multi) not in MULTI_LAYER_MODES:
        raise PipelineError(
            f"bad multi_layer {multi!r}; expected null or one of: {', '.join(MULTI_LAYER_MODES)}")
    ablate = cfg.get("ablate", False)
    if not isinstance(ablate, bool):
        raise PipelineError(f"bad ablate {ablate!r}: expected true or false")
    if ablate and multi is not None:
        raise PipelineError("ablate=true and multi_layer are exclusive: pick one")
    gen = cfg.get("generation") or {}
    max_new = _int(gen.get("max_new_tokens", 24), "generation.max_new_tokens")
    if max_new < 1:
        raise PipelineError(f"bad generation.max_new_tokens {max_new}: expected >= 1")
    questions = _int(cfg.get("questions", 0), "questions")
    if questions < 0:
        raise PipelineError(f"bad questions {questions}: expected 0 (all) or a positive int")
    search = OmegaConf.to_container(cfg.search, resolve=True) if cfg.get("search") is not None else {}
    return SteerSettings(
        trait=str(cfg.trait) if trait is None else trait, layers=list(dict.fromkeys(layers)), coefs=coefs,
        method=str(cfg.method), position=canonical(str(cfg.position)),
        component=str(cfg.component), prompt_set=str(cfg.prompt_set),
        vector_variant=str(cfg.vectors.model_variant), questions=questions,
        steer_positions=steer_positions, ablate=ablate,
        multi_layer=None if multi is None else str(multi),
        global_scale=_num(cfg.get("global_scale", 1.0), "global_scale"),
        min_coherence=_num(cfg.get("min_coherence", 75), "min_coherence"),
        max_new_tokens=max_new, temperature=_num(gen.get("temperature", 0.0), "generation.temperature"),
        batch_size=gen.get("batch_size", "auto"), seed=_int(cfg.get("seed", 0), "seed"),
        device=str(cfg.get("device", "auto")), search=search,
    )


# --- inputs -----------------------------------------------------------------------------------
def load_questions(s: SteerSettings, datasets_root: Path | None) -> tuple[list[str], str]:
    """The questions to steer on and the file they came from (first ``questions`` of them)."""
    if s.prompt_set == STEERING_PROMPT_SET:
        from .layout import trait_data_dir
        from .trait_data import load_steering

        questions = load_steering(s.trait, datasets_root).questions
        source = trait_data_dir(s.trait, datasets_root) / "steering.json"
    else:
        from .prompt_sets import load_prompt_set

        ps = load_prompt_set(s.prompt_set, datasets_root)
        questions, source = [p.text for p in ps.prompts], ps.path
    if s.questions:
        questions = questions[: s.questions]
    return questions, str(source)


@dataclass(frozen=True)
class LoadedVector:
    layer: int
    vector: Any  # torch.Tensor [d], float32
    provenance: dict
    path: Path


def vector_paths(lay: Layout, s: SteerSettings) -> dict[int, Path]:
    """Every layer's vector file of the extraction variant; a missing one names what exists."""
    out = {}
    for layer in s.layers:
        path = lay.vector_path(s.trait, s.vector_variant, s.position, s.component, s.method, layer)
        if not path.is_file():
            have = sorted({la for pos, comp, meth, la, _ in lay.vector_files(s.trait, s.vector_variant)
                           if pos == s.position and comp == s.component and meth == s.method})
            hint = (f"layers with {s.method}/{s.component} vectors: {_ranges(have)}" if have else
                    f"run `python -m trait_pipeline.extract trait={s.trait} "
                    f"model_variant={s.vector_variant}` first")
            raise PipelineError(
                f"no vector for layer {layer} of {s.trait} on variant {s.vector_variant!r} "
                f"({s.method}, {s.component}, {s.position}): missing {path}; {hint}")
        out[layer] = path
    return out


def load_vectors(lay: Layout, s: SteerSettings) -> dict[int, LoadedVector]:
    """Every layer's vector from the extraction variant (see :func:`vector_paths`)."""
    from .vector_store import load_vector

    out = {}
    for layer, path in vector_paths(lay, s).items():
        vec, meta = load_vector(path)
        out[layer] = LoadedVector(layer, vec.float(), meta, path)
    return out


def precheck(cfg: DictConfig) -> None:
    """What can be checked before Hydra makes the run folder: settings, questions, vectors."""
    from .judges import check_judge_config

    s = settings(cfg)
    kind = check_judge_config(cfg.judge)["kind"]
    if kind == "none":
        raise PipelineError("steering needs a judge, but judge=none; pick judge=offline|openai|local_hf")
    if kind == "offline":  # cheap to build; model judges are checked in the job (no model here)
        from .judges import load_trait_spec, make_judge

        make_judge(cfg.judge, cache_dir=Path(cfg.paths.cache)).check_trait(
            load_trait_spec(s.trait, Path(cfg.paths.datasets)))
    load_questions(s, Path(cfg.paths.datasets))
    vector_paths(layout(cfg), s)


def _ranges(values: Sequence[int]) -> str:
    """``[0,1,2,5]`` -> ``0-2, 5``."""
    parts, vals = [], sorted(values)
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        parts.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ", ".join(parts)


# --- plans: one steering config each -----------------------------------------------------------
@dataclass
class Plan:
    """One steering config: the terms every question's row gets, and how it is recorded."""

    terms: list  # list[SteeringTerm]
    config: dict  # what results.json records under run.config (and part of the run key)
    label: tuple[str, str]  # (layers, coef) for the responses file name
    vector_provenance: list[dict]
    key: str = ""
    sign: float = 1.0  # direction the trait is meant to move (for steerability)


def vector_entry(s: SteerSettings, layer: int, weight: float | None) -> dict:
    return {"layer": int(layer), "method": s.method, "weight": weight, "component": s.component,
            "position": s.position}


def single_plan(s: SteerSettings, vec: LoadedVector, coef: float) -> Plan:
    from .steering_ops import SteeringTerm

    config = {"vectors": [vector_entry(s, vec.layer, float(coef))],
              "steer_positions": s.steer_positions}
    return Plan([SteeringTerm(vec.layer, s.component, vec.vector, coef=float(coef))], config,
                (str(vec.layer), coef_label(coef)), [vec.provenance], sign=1.0 if coef >= 0 else -1.0)


def ablation_plan(s: SteerSettings, vec: LoadedVector) -> Plan:
    from .steering_ops import SteeringTerm

    config = {"vectors": [vector_entry(s, vec.layer, None)], "ablate": True,
              "steer_positions": s.steer_positions}
    # projecting the trait out is meant to lower it
    return Plan([SteeringTerm(vec.layer, s.component, vec.vector, ablate=True)], config,
                (str(vec.layer), "ablate"), [vec.provenance], sign=-1.0)


def multi_layer_plan(s: SteerSettings, vectors: dict[int, LoadedVector], results: dict | None) -> Plan:
    """Weighted or orthogonal steering over ``s.layers`` from their best single-layer runs."""
    from .steering_ops import LayerBest, SteeringTerm, plan_orthogonal, plan_weighted
    from .steering_summary import best_per_layer, read_results

    table = best_per_layer(read_results(results), s.min_coherence, method=s.method,
                           component=s.component, vector_variant=s.vector_variant) if results else {}
    best = [LayerBest(la, table[la].best.coef, table[la].best.delta)
            for la in s.layers if la in table and table[la].best is not None]
    missing = [la for la in s.layers if la not in {b.layer for b in best}]
    if missing:
        raise PipelineError(
            f"multi_layer={s.multi_layer} needs a coherent single-layer run (coherence >= "
            f"{s.min_coherence:g}) for every layer; none for layer(s) {missing}: run "
            f"`python -m trait_pipeline.steer layer={missing[0]}` (search or coef) first")
    vecs = {la: vectors[la].vector for la in s.layers}
    if s.multi_layer == "weighted":
        coefs = plan_weighted(best, s.global_scale)
    else:
        coefs, vecs = plan_orthogonal(best, vecs, s.global_scale)
    layers = sorted(coefs)
    terms = [SteeringTerm(la, s.component, vecs[la], coef=coefs[la]) for la in layers]
    from .coef_search import round_coef

    config = {
        "vectors": [vector_entry(s, la, round_coef(coefs[la])) for la in layers],
        "multi_layer": {"mode": s.multi_layer, "global_scale": s.global_scale,
                        "from_single_layer": {str(b.layer): {"coef": b.coef, "delta": b.delta}
                                              for b in best}},
        "steer_positions": s.steer_positions,
    }
    label = ("_".join(map(str, layers)), "_".join(coef_label(round_coef(coefs[la])) for la in layers))
    return Plan(terms, config, label, [vectors[la].provenance for la in layers])


# --- the stage ----------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="microseconds")


def _hash_list(items: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(items)).encode()).hexdigest()[:16]


def _composed_config_link(steering_dir: Path, cfg: DictConfig) -> str:
    """Relative path (from the steering dir) of the composed config this job ran with.

    Under Hydra it is the job's ``.hydra/config.yaml``; when called directly, a snapshot is
    written under ``runs/``. The judge config holds only the *name* of the key's variable.
    """
    from .config import hydra_snapshot_path

    snap = hydra_snapshot_path()
    if snap is not None and snap.is_file():
        return _relative(snap, steering_dir)
    from .jsonio import atomic_write_text

    snap = steering_dir / "runs" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{id(cfg) & 0xffff:04x}" / "config.yaml"
    plain = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}
    atomic_write_text(snap, OmegaConf.to_yaml(OmegaConf.create(plain)))
    return _relative(snap, steering_dir)


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        return str(path)


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def judged(trait: Sequence[float | None], coh: Sequence[float | None], outage: bool) -> bool:
    """Whether a set of answers was really judged: some trait score, and, when a judge
    request failed in the batch, every score (a None may then be the outage, not the answer).

    >>> judged([None, None], [None, None], False), judged([50, None], [80, 80], True)
    (False, False)
    """
    if not any(t is not None for t in trait):
        return False
    return not outage or all(x is not None for x in (*trait, *coh))


def steerability(sign: float, scores: Sequence[float | None], base: Sequence[float | None]) -> float | None:
    """Share of questions whose trait score moved from the baseline in the intended direction,
    among those whose baseline could move that way (a baseline of 0 cannot go down: counting
    it would cap a perfect steering at the share of questions not already at the end).

    >>> steerability(1.0, [60, 40, None], [50, 50, 50])
    0.5
    >>> steerability(-1.0, [0, 0, 10], [0, 50, 50])     # the first could not go lower
    1.0
    """
    pairs = [(a, b) for a, b in zip(scores, base) if a is not None and b is not None
             and (b < 100 if sign > 0 else b > 0)]
    if not pairs:
        return None
    return sum(1 for a, b in pairs if sign * (a - b) > 0) / len(pairs)


class Steerer:
    """Everything one job needs to evaluate plans: model, judge, questions, results store."""

    def __init__(self, cfg: DictConfig, s: SteerSettings, lm, judge, trait_spec, questions: list[str],
                 prompts_file: str, vectors: dict[int, LoadedVector]) -> None:
        """``lm``: a loaded model, or ``(spec, load)`` to load it on first use only, so a
        rerun whose every config is already in results.json never loads the model."""
        from .results_store import ResultsStore

        if isinstance(lm, tuple):
            spec, self._load_lm = lm
            self._lm = None
        else:
            spec, self._lm, self._load_lm = lm.spec, lm, None
        self.spec = spec
        self.s, self.judge, self.trait_spec = s, judge, trait_spec
        self.skipped: dict[str, int] = {}  # configs found in results.json, per layer group
        self.questions = questions
        self.vectors = vectors
        lay = layout(cfg)
        self.layout = lay
        self.dir = lay.steering_dir(s.trait, spec.name, s.position, s.prompt_set)
        self.store = ResultsStore(lay.results_path(s.trait, spec.name, s.position, s.prompt_set))
        self._cfg, self._composed_config = cfg, None
        from .review.run_record import snapshot_link

        self.snapshot = snapshot_link(self.dir)  # the resolved config + provenance of this job
        self.model_variant = {"name": spec.name, "model": spec.model, "lora": spec.lora,
                              "revision": spec.revision, "dtype": spec.dtype}
        vspec = variant_spec(cfg, s.vector_variant)
        self.vector_source = {"experiment": str(cfg.experiment), "model_variant": s.vector_variant,
                              "model": vspec.model, "lora": vspec.lora, "trait": s.trait}
        self.generation = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature,
                           "seed": s.seed if s.temperature > 0 else None}
        self.header = {
            "trait": s.trait, "experiment": str(cfg.experiment), "model_variant": spec.name,
            "steering_model": spec.model, "steering_lora": spec.lora,
            "vector_source": self.vector_source, "judge": judge.describe(),
            "position": s.position, "prompt_set": s.prompt_set, "prompts_file": prompts_file,
        }
        common = {"model_variant": self.model_variant, "generation": self.generation,
                  "questions": _hash_list(questions), "judge": judge.describe(),
                  "prompt_set": s.prompt_set}
        from .results_store import run_key

        self.baseline_key = run_key({"baseline": True, **common})
        self._key_common = {**common, "vector_source": self.vector_source}
        self.batch_size = s.batch_size
        self.gen_seconds: list[tuple[int, float]] = []  # (rows, seconds) per generate call
        self.failed_configs = 0  # configs the judge could not score (not stored)

    @property
    def lm(self):
        if self._lm is None:
            self._lm = self._load_lm()
        return self._lm

    @property
    def model_loaded(self) -> bool:
        return self._lm is not None

    @property
    def composed_config(self) -> str:
        """Link to the composed config, snapshotted only once a run is stored (no-op: never)."""
        if self._composed_config is None:
            self._composed_config = _composed_config_link(self.dir, self._cfg)
        return self._composed_config

    # generation + judging ------------------------------------------------------------------------
    def _generate(self, rows: list[list], positions: str) -> list[str]:
        """Generate every question under each row plan (config-major); responses, stripped."""
        from tqdm import tqdm

        from .generation import generate
        from .steering_ops import RowSteering

        prompts = [q for _ in range(len(rows) // len(self.questions)) for q in self.questions]
        lm = self.lm  # load (or fail to load: device, weights) before a progress bar is drawn
        bar = tqdm(total=len(prompts), desc="steer generate", unit="row", file=sys.stderr,
                   leave=False, disable=len(prompts) < 2)
        t0 = time.perf_counter()
        try:
            gens = generate(
                lm, prompts, max_new_tokens=self.s.max_new_tokens,
                temperature=self.s.temperature, batch_size=self.batch_size, seed=self.s.seed,
                batch_context=RowSteering(lm.model, rows, positions) if any(rows) else None,
                progress=bar.update,
            )
        finally:
            bar.close()
        self.gen_seconds.append((len(prompts), time.perf_counter() - t0))
        return [g.response_text.strip() for g in gens]

    def _judge(self, answers: list[str]) -> tuple[list, list, bool]:
        """Trait and coherence scores, and whether any judge request failed outright."""
        items = [(self.questions[i % len(self.questions)], a) for i, a in enumerate(answers)]
        before = getattr(self.judge, "failed_requests", 0)
        trait, coh = self.judge.score_trait(self.trait_spec, items), self.judge.score_coherence(items)
        return trait, coh, getattr(self.judge, "failed_requests", 0) > before

    def _judge_error(self, outage: bool, answers: Sequence[str] = ()) -> tuple[str, str]:
        """Why answers went unscored, and what to do: an outage is retried by a rerun; a judge
        that answered but found nothing to score (an empty or very short answer, say) is not."""
        err = getattr(self.judge, "last_error", None)
        if outage or err:
            return (f"judge error: {err}" if err else "a judge request failed"), "rerun when the judge answers"
        sample = next((a for a in answers if a), "")
        shown = f"; e.g. {sample[:60]!r}" if sample else "; every answer was empty"
        return (f"the judge answered but found nothing to score{shown}",
                "longer answers (generation.max_new_tokens) or another judge may help")

    def _write_responses(self, path: Path, key: str, answers, trait, coh) -> str:
        from .jsonio import write_json
        from .layout import SCHEMA_VERSION

        items = [{"question": q, "response": a, "trait_score": t, "coherence_score": c}
                 for q, a, t, c in zip(self.questions, answers, trait, coh)]
        write_json(path, {"schema_version": SCHEMA_VERSION, "key": key, "responses": items})
        return _relative(path, self.dir)

    # baseline ---------------------------------------------------------------------------------
    def baseline(self) -> dict:
        """The baseline for these settings, generated and judged once (same max_new_tokens).

        Parallel jobs of a sweep want the same baseline: the first takes a lock and makes it,
        the others wait on the lock and then find it stored. A baseline the judge could not
        score is an error, never stored, so a rerun makes it again.
        """
        from filelock import FileLock, Timeout

        found = self.store.baseline(self.baseline_key)
        if found is not None:
            return found
        self.store.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.store.path.with_name("baseline.lock")))
        try:
            with lock.acquire(timeout=self.store.lock_timeout):
                found = self.store.baseline(self.baseline_key)
                return found if found is not None else self._make_baseline()
        except Timeout:
            raise PipelineError(
                f"another job has been making the baseline for over {self.store.lock_timeout:.0f} s "
                f"(lock {lock.lock_file}); delete the lock if no job is running") from None

    def _make_baseline(self) -> dict:
        answers = self._generate([[] for _ in self.questions], self.s.steer_positions)
        trait, coh, outage = self._judge(answers)
        if not judged(trait, coh, outage):
            why, advice = self._judge_error(outage, answers)
            raise PipelineError(
                f"the baseline was not judged ({sum(t is not None for t in trait)} of {len(trait)} "
                f"answers scored; {why}); nothing was stored: {advice}")
        data = self.store.read() or {}
        first = data.get("baseline") is None
        path = self.layout.baseline_path(self.s.trait, self.spec.name, self.s.position, self.s.prompt_set)
        if not first:  # another baseline (other settings) already owns baseline.json
            path = path.with_name(f"baseline_{self.baseline_key}.json")
        record = {
            "trait_mean": _mean(trait), "coherence_mean": _mean(coh),
            "n": sum(t is not None for t in trait), "trait_scores": trait,
            "generation": self.generation, "model_variant": self.model_variant,
            "judge": self.judge.describe(), "questions": len(self.questions),
            "responses": self._write_responses(path, self.baseline_key, answers, trait, coh),
            "timestamp": _now(),
        }
        stored = self.store.set_baseline_if_absent(self.baseline_key, record, self.header)
        if stored.get("responses") != record["responses"]:
            # stored by a job that did not take the lock (an older version): drop our copy
            path.unlink(missing_ok=True)
        return stored

    # plans --------------------------------------------------------------------------------------
    def keyed(self, plan: Plan) -> Plan:
        from .results_store import run_key

        plan.key = run_key({"config": plan.config, **self._key_common})
        return plan

    def evaluate(self, plans: list[Plan], baseline: dict, strict: bool = False) -> list[dict]:
        """Run records of ``plans``, in order: present ones from results.json (resume), the
        others from one batched generate with per-row steering, judged and stored.

        A config the judge could not score is not stored (a rerun retries it); if none could
        be scored, or ``strict`` and any could not, this raises :class:`PipelineError`.
        """
        plans = [self.keyed(p) for p in plans]
        have = {r.get("key"): r for r in (self.store.read() or {}).get("runs", [])}
        todo, seen = [], set()
        for p in plans:
            if p.key not in have and p.key not in seen:
                todo.append(p)
                seen.add(p.key)
        for p in plans:  # counted here, said once per layer group at the end (report_skipped)
            if p.key in have:
                group = f"layer {p.label[0]}"
                self.skipped[group] = self.skipped.get(group, 0) + 1
        if todo:
            n = len(self.questions)
            rows = [p.terms for p in todo for _ in range(n)]
            answers = self._generate(rows, self.s.steer_positions)
            trait, coh, outage = self._judge(answers)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            records, failed = [], []
            for j, p in enumerate(todo):
                a, t, c = answers[j * n:(j + 1) * n], trait[j * n:(j + 1) * n], coh[j * n:(j + 1) * n]
                if not judged(t, c, outage):
                    failed.append(p)
                    continue
                path = self.layout.run_responses_path(
                    self.s.trait, self.spec.name, self.s.position, self.s.prompt_set,
                    self.s.component, p.label[0], p.label[1], f"{stamp}_{p.key[:6]}",
                    method=self.s.method)
                records.append({
                    "key": p.key, "config": p.config,
                    "result": {"trait_mean": _mean(t), "coherence_mean": _mean(c),
                               "n": sum(x is not None for x in t),
                               "steerability": steerability(p.sign, t, baseline.get("trait_scores") or []),
                               "delta": None if _mean(t) is None or baseline.get("trait_mean") is None
                               else _mean(t) - baseline["trait_mean"]},
                    "baseline_key": self.baseline_key, "model_variant": self.model_variant,
                    "vector_source": self.vector_source, "vector_provenance": p.vector_provenance,
                    "generation": self.generation, "judge": self.judge.describe(),
                    "questions": n, "composed_config": self.composed_config,
                    "snapshot": self.snapshot,
                    "responses": self._write_responses(path, p.key, a, t, c), "timestamp": _now(),
                })
            if failed:
                self.failed_configs += len(failed)
                why, advice = self._judge_error(outage, answers)
                msg = (f"{len(failed)} of {len(todo)} steering configs were not judged "
                       f"({why}); they were not stored")
                if len(failed) == len(todo) or strict:
                    if records:
                        self.store.add_runs(records, self.header)
                    raise PipelineError(f"{msg}: {advice}")
                log.warning("%s; a rerun retries them", msg)
                print(f"WARNING: {msg}; a rerun retries them", file=sys.stderr, flush=True)
            if records:
                self.store.add_runs(records, self.header)
            have.update({r["key"]: r for r in records})
        return [have[p.key] for p in plans if p.key in have]


def base_coefs(steerer: Steerer, cfg: DictConfig) -> tuple[dict[int, float], str]:
    """``mean per-token ‖h‖ / ‖v‖`` per layer: the norm of what steering adds to.

    Norms come from the extraction's activations metadata (``token_norms``: the mean over
    training examples of each window's mean per-token norm) when it has them, else are
    estimated on the steered model (last prompt token, 3 questions). Older extractions that
    only recorded ``activation_norms`` (the norm of each window's MEAN, smaller for long
    windows) are re-estimated rather than used, so every search starts on the same scale."""
    s = steerer.s
    norms = _extraction_norms(steerer.layout, s)
    source = "extraction"
    if any(la not in norms for la in s.layers):
        norms = estimate_activation_norms(steerer.lm, steerer.questions[:ACT_NORM_QUESTIONS],
                                          s.layers, s.component)
        source = "steered_model"
    out = {}
    for la in s.layers:
        vnorm = float(steerer.vectors[la].vector.norm())
        out[la] = norms[la] / max(vnorm, 1e-8)
    return out, source


def _extraction_norms(lay: Layout, s: SteerSettings) -> dict[int, float]:
    """Per-layer mean per-token norms from ``activations/.../metadata.json`` (if recorded)."""
    from .jsonio import read_json

    path = lay.activations_dir(s.trait, s.vector_variant, s.position, s.component) / "metadata.json"
    if not path.is_file():
        return {}
    try:
        meta = read_json(path)
    except PipelineError:
        return {}
    value = meta.get("token_norms") if isinstance(meta, dict) else None
    if not isinstance(value, dict):
        return {}
    try:
        return {int(k): float(v) for k, v in value.items() if v is not None}
    except (TypeError, ValueError):
        return {}


def estimate_activation_norms(lm, questions: list[str], layers: list[int], component: str) -> dict[int, float]:
    """Mean L2 norm of the last prompt token's (layer, component) output."""
    import torch

    from .capture import record

    batch = lm.pad_batch(lm.encode([lm.format_prompt(q) for q in questions]))
    with record(lm.model, layers, [component]) as rec, torch.no_grad():
        lm.model(**batch)
    return {la: float(rec.calls[(component, la)][0][:, -1].float().norm(dim=-1).mean()) for la in layers}


def run_search(steerer: Steerer, cfg: DictConfig, baseline: dict) -> dict:
    """Adaptive search for every layer (and direction) in lockstep; one batched generate per step."""
    from .coef_search import SearchParams, saturation_message, search_directions
    from .results_store import run_key

    s = steerer.s
    known = {"steps", "start_mult", "up_mult", "down_mult", "momentum", "direction"}
    extra = sorted(set(s.search) - known)
    if extra:
        raise PipelineError(f"unknown key search.{extra[0]}; expected: {', '.join(sorted(known))}")
    params = SearchParams(**{k: s.search[k] for k in known if k in s.search},
                          min_coherence=s.min_coherence)
    bases, source = base_coefs(steerer, cfg)

    def evaluate(configs):
        plans = [single_plan(s, steerer.vectors[la], c) for la, c in configs]
        recs = steerer.evaluate(plans, baseline, strict=True)
        return [(r["result"]["trait_mean"], r["result"]["coherence_mean"]) for r in recs]

    walks = search_directions(bases, params, evaluate, baseline.get("trait_mean"))
    saturated: dict[str, list[int]] = {}
    for (la, direction), walk in walks.items():
        record = {**walk.to_dict(), "base_coef_source": source, "params": asdict(params),
                  "method": s.method, "component": s.component, "vector_variant": s.vector_variant}
        # the key of an upward walk stays what it was before directions existed: reruns match
        key_params = {k: v for k, v in record["params"].items()
                      if not (k == "direction" and v == "up")}
        key = run_key({"search": la, "params": key_params, "method": s.method,
                       "component": s.component, **steerer._key_common,
                       "steer_positions": s.steer_positions,
                       **({"direction": direction} if params.direction == "both" else {})})
        steerer.store.set_search(key, record, steerer.header)
        if walk.saturated:
            saturated.setdefault(walk.direction, []).append(la)
            continue
        line = walk.describe()
        if walk.status != "ok":
            log.warning(line)
        else:
            log.info(line)
    for direction, layers in saturated.items():
        # one line for all layers: the baseline is the same for each
        msg = (f"layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}: "
               + saturation_message(baseline["trait_mean"], direction))
        log.warning(msg)
    if params.direction == "both":
        return walks  # keyed (layer, "up"|"down")
    return {la: walk for (la, _), walk in walks.items()}


@dataclass
class TraitInputs:
    """Everything one trait of a job needs before the model loads."""

    s: SteerSettings
    trait_spec: Any
    questions: list[str]
    prompts_file: str
    vectors: dict[int, LoadedVector]


def run(cfg: DictConfig) -> dict:
    """The stage: see the module docstring. Returns a small summary dict (for tests).

    ``trait=[a,b,c]`` steers each trait in turn with ONE model load; every trait's questions
    and vectors are found first, so a missing one fails before the model loads. The result
    is then ``{"traits": {trait: summary}}``.
    """
    from .judges import load_trait_spec, make_judge
    from .models import load_variant

    traits = [str(t) for t in as_list(cfg.trait)]
    if len(set(traits)) != len(traits):
        raise PipelineError(f"trait lists a trait twice or more: {traits}")
    lay = layout(cfg)
    datasets_root = Path(cfg.paths.datasets)
    judge = make_judge(cfg.judge, cache_dir=Path(cfg.paths.cache))
    if judge is None:
        raise PipelineError("steering needs a judge, but judge=none; pick judge=offline|openai|local_hf")
    inputs = []
    for trait in traits or [None]:
        s = settings(cfg, trait)
        trait_spec = load_trait_spec(s.trait, datasets_root)
        judge.check_trait(trait_spec)
        questions, prompts_file = load_questions(s, datasets_root)
        vectors = load_vectors(lay, s)  # before the model loads: a missing layer fails fast
        inputs.append(TraitInputs(s, trait_spec, questions, prompts_file, vectors))

    spec = variant_spec(cfg)
    loaded: dict = {}

    def load():
        """The steered model, loaded once for every trait of the job (on first need)."""
        if "lm" not in loaded:
            from .layers import check_layers

            s0 = inputs[0].s
            lm = load_variant(spec, device=s0.device)
            check_layers(lm.model, s0.layers)
            hidden = getattr(getattr(lm.model, "config", None), "hidden_size", None)
            for t in inputs:
                d_model = next(iter(t.vectors.values())).vector.numel()
                if t.s.component == "residual" and hidden is not None and hidden != d_model:
                    raise PipelineError(
                        f"vector size {d_model} of {t.s.trait} does not match {lm.spec.name}'s "
                        f"hidden size {hidden}: the vectors of {t.s.vector_variant!r} come from "
                        "another model family")
            loaded["lm"] = lm
        return loaded["lm"]

    if len(inputs) == 1:
        return steer_trait(cfg, (spec, load), judge, inputs[0])
    return {"traits": {t.s.trait: steer_trait(cfg, (spec, load), judge, t) for t in inputs}}


def steer_trait(cfg: DictConfig, model, judge, t: TraitInputs) -> dict:
    """Baseline, then the configured runs, for one trait; ``model`` is ``(spec, load)``:
    the model loads on first need, so a rerun with everything in results.json never loads it."""
    s, vectors = t.s, t.vectors
    steerer = Steerer(cfg, s, model, judge, t.trait_spec, t.questions, t.prompts_file, vectors)
    baseline = steerer.baseline()
    searches = None
    if s.multi_layer is not None:
        plan = multi_layer_plan(s, vectors, steerer.store.read())
        steerer.evaluate([plan], baseline)
    elif s.ablate:
        steerer.evaluate([ablation_plan(s, vectors[la]) for la in s.layers], baseline)
    elif s.coefs is not None:
        steerer.evaluate([single_plan(s, vectors[la], c) for la in s.layers for c in s.coefs], baseline)
    else:
        searches = run_search(steerer, cfg, baseline)

    from .steering_summary import format_summary, heatmap_png, read_results

    for group, n in sorted(steerer.skipped.items()):
        log.info("%s: %d config%s already in results.json, skipped", group, n, "" if n == 1 else "s")
    if not steerer.model_loaded:
        log.info("nothing to do: every config is in %s (model not loaded)", steerer.store.path)
        _mark_noop_run(steerer.store.path)
    # only the runs compared with this job's baseline: another baseline's runs (other
    # generation settings, judge or questions) are not comparable with it
    res = read_results(steerer.store.path, baseline_key=steerer.baseline_key)
    print(format_summary(res, s.min_coherence), flush=True)
    png = heatmap_png(res, steerer.dir / "heatmap.png", s.min_coherence, method=s.method,
                      component=s.component)
    if png is not None:
        print(f"heatmap: {png}", flush=True)
    print(f"results: {steerer.store.path}", flush=True)
    return {"results": steerer.store.path, "baseline": baseline, "searches": searches,
            "gen_seconds": steerer.gen_seconds}


def _mark_noop_run(results_path: Path) -> None:
    """Hydra made this job a runs/<id>/ folder before it knew there was nothing to do:
    mark it, so a listing of runs/ tells the runs that did something from those that did not."""
    from .config import hydra_snapshot_path

    snap = hydra_snapshot_path()
    if snap is not None and snap.is_file():
        (snap.parent.parent / "NOTHING_TO_DO").write_text(
            f"every config was already in {results_path}; the model was not loaded\n")


main = stage_main("steer", precheck)(run)

if __name__ == "__main__":
    main()
