"""What the dashboard shows, as JSON-ready dicts: discovery and per-view data of one
experiment, read through :class:`~trait_pipeline.layout.Layout` only.

No web framework here; :mod:`trait_pipeline.serve` turns these into HTTP routes. Names
that come from a request go through the layout's checks (a ``LayoutError`` for ``..``,
slashes, absolute paths) and every path is confirmed to lie under the experiments
directory before anything is read (:func:`inside`), so a symlink cannot lead out either.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> list_experiments(root)
{'experiments': []}
>>> Dashboard(root).overview("../etc")
Traceback (most recent call last):
...
trait_pipeline.layout.LayoutError: bad experiment '../etc': expected letters, digits, '_', '-' or '.'
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import layout as layout_mod
from .errors import PipelineError
from .evaluation import add_combined_scores, best_per_trait
from .layout import SCHEMA_VERSION, Layout, LayoutError, check_name, parse_position_dir
from .positions import Position, PositionError
from .review import dashboard_views as review_views
from .steering_summary import (
    DEFAULT_MIN_COHERENCE,
    best_per_layer,
    heatmap_grid,
    read_results,
)

METRICS = ("combined_score", "val_accuracy", "val_effect_size", "p_value", "null_percentile")
CI_METRICS = ("val_accuracy", "val_effect_size")  # metrics stored with a 95 % interval (<metric>_ci)
MAX_RESPONSES = 200  # a response browser page; steering files hold tens of questions


class NotFound(PipelineError):
    """A well-formed request for something that is not on disk (HTTP 404)."""


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, or a LayoutError when it leaves ``root`` (symlinks included)."""
    real_root = Path(root).resolve()
    real = Path(path).resolve()
    if real != real_root and real_root not in real.parents:
        raise LayoutError(f"path {path} is outside the experiments directory")
    return real


def _read(root: Path, path: Path) -> Any:
    real = inside(root, path)
    if not real.is_file():
        raise NotFound(f"not found: {Path(path).relative_to(root).as_posix()}")
    try:
        return json.loads(real.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"malformed JSON in {path.name}: line {exc.lineno}: {exc.msg}") from None


def _position(text: str) -> str:
    """A position given as ``response[:5]`` or as its directory name ``response__5``."""
    try:
        return str(Position.parse(text))
    except PositionError:
        try:
            return parse_position_dir(text)
        except (PositionError, ValueError):
            raise LayoutError(f"bad position {text!r}: expected e.g. response[:5] or response__5") from None


def list_experiments(root: Path) -> dict:
    return {"experiments": layout_mod.experiments(root)}


@dataclass
class Dashboard:
    """The dashboard's view of an experiments directory."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def layout(self, experiment: str) -> Layout:
        lay = Layout(self.root, experiment)
        if not inside(self.root, lay.root).is_dir():
            raise NotFound(f"no experiment {experiment!r} in {self.root}; "
                           f"found: {', '.join(layout_mod.experiments(self.root)) or 'none'}")
        return lay

    # discovery --------------------------------------------------------------------------
    def overview(self, experiment: str) -> dict:
        """Traits and variants per stage, as found on disk."""
        lay = self.layout(experiment)
        inference_variants = lay.variants("inference")
        return {
            "schema_version": SCHEMA_VERSION,
            "experiment": experiment,
            "extraction": {
                "traits": lay.traits("extraction"),
                "variants": sorted(set(lay.variants("extraction")) | set(lay.evaluation_variants())),
            },
            "steering": {"traits": lay.traits("steering"), "variants": lay.variants("steering")},
            "inference": {
                "variants": inference_variants,
                "traits": sorted({t for v in inference_variants for t in lay.projection_traits(v)}),
            },
            # what each variant loads, read from its runs' snapshots (for the variant pickers)
            "variant_info": review_views.variant_info(lay.root),
        }

    # runs and their resolved configs ----------------------------------------------------
    def runs(self, experiment: str) -> dict:
        """Every run folder of the experiment with status and main result."""
        lay = self.layout(experiment)
        return {"schema_version": SCHEMA_VERSION, "experiment": experiment,
                "runs": review_views.runs_of(lay.root)}

    def run_config(self, experiment: str, run: str) -> dict:
        """One run's resolved snapshot (``run``: its folder relative to the experiment)."""
        lay = self.layout(experiment)
        return review_views.run_config(lay.root, run)

    def run_diff(self, experiment: str, a: str, b: str, show_all: bool = False) -> dict:
        """What two runs ran with, side by side (the ``trait-pipeline diff`` of them)."""
        lay = self.layout(experiment)
        return review_views.run_diff(lay.root, a, b, show_all)

    def _run_of(self, lay: Layout, base: Path, entry: dict) -> str | None:
        """The run folder (relative to the experiment) a result entry's snapshot link names."""
        d = review_views.run_dir_of(base, entry.get("snapshot"))
        if d is None:
            return None
        try:
            return inside(lay.root, d).relative_to(lay.root.resolve()).as_posix()
        except LayoutError:
            return None

    # extraction -------------------------------------------------------------------------
    def extraction(self, experiment: str, variant: str) -> dict:
        """Evaluation rows pivoted to layer × method grids, best vector per trait, logit lens."""
        lay = self.layout(experiment)
        check_name("model variant", variant)
        path = lay.evaluation_path(variant)
        data = _read(self.root, path) if inside(self.root, path).is_file() else {}
        rows = [dict(r) for r in (data.get("results") or data.get("all_results") or [])
                if isinstance(r, dict) and "trait" in r and "layer" in r and "method" in r]
        if rows and any("combined_score" not in r for r in rows):
            add_combined_scores(rows)
        best = data.get("best") or (best_per_trait(rows) if rows else {})
        traits = sorted({r["trait"] for r in rows} | set(lay.traits("extraction")))
        heatmaps: dict[str, list[dict]] = {}
        bands = {(e.get("trait"), str(e.get("position")), str(e.get("component", "residual"))):
                 e.get("null_band") for e in (data.get("entries") or []) if isinstance(e, dict)}
        for trait in sorted({r["trait"] for r in rows}):
            heatmaps[trait] = _method_grids([r for r in rows if r["trait"] == trait])
            for g in heatmaps[trait]:
                g["null_band"] = bands.get((trait, g["position"], g["component"]))
        lens = {}
        vectors = {}
        for trait in traits:
            if variant not in lay.variants("extraction", trait):
                continue
            found = []
            for pos, comp, lp in lay.logit_lens_files(trait, variant):
                data_ = _read(self.root, lp)
                found.append({"position": pos or data_.get("position"),
                              "component": comp or data_.get("component"),
                              "file": lp.relative_to(self.root).as_posix(),
                              "methods": data_.get("methods") or {}})
            if found:
                lens[trait] = found
            vectors[trait] = len(lay.vector_files(trait, variant))
        if not rows and not vectors:
            raise NotFound(f"no extraction data for variant {variant!r} in experiment {experiment!r}")
        config_runs: dict[str, list[dict]] = defaultdict(list)
        for e in data.get("entries") or []:
            run = self._run_of(lay, path.parent, e) if isinstance(e, dict) else None
            if run:
                config_runs[str(e.get("trait"))].append(
                    {"position": e.get("position"), "component": e.get("component"), "run": run})
        return {
            "config_runs": dict(config_runs),
            "schema_version": SCHEMA_VERSION, "experiment": experiment, "variant": variant,
            "evaluation_file": path.relative_to(self.root).as_posix() if rows else None,
            "metrics": list(METRICS), "traits": traits, "best": best,
            "heatmaps": heatmaps, "logit_lens": lens, "vector_counts": vectors,
        }

    # steering ---------------------------------------------------------------------------
    def steering_index(self, experiment: str, variant: str, trait: str) -> dict:
        """The results files of a trait on a variant: ``[{position, position_dir, prompt_set}]``."""
        lay = self.layout(experiment)
        files = [
            {"position": pos, "position_dir": Position.parse(pos).dirname, "prompt_set": ps}
            for pos, ps, _ in lay.steering_results_files(trait, variant)
        ]
        return {"experiment": experiment, "variant": variant, "trait": trait, "results": files}

    def _results_path(self, lay: Layout, trait: str, variant: str, position: str,
                      prompt_set: str) -> tuple[Path, str]:
        pos = _position(position)
        path = lay.results_path(trait, variant, pos, prompt_set)
        if not inside(self.root, path).is_file():
            raise NotFound(f"no steering results for {trait} on {variant} at {pos} / {prompt_set}")
        return path, pos

    def steering(self, experiment: str, variant: str, trait: str, position: str,
                 prompt_set: str, min_coherence: float = DEFAULT_MIN_COHERENCE) -> dict:
        """One results.json: baseline, layer × coef grids per method/component, best per layer."""
        lay = self.layout(experiment)
        path, pos = self._results_path(lay, trait, variant, position, prompt_set)
        data = _read(self.root, path)
        res = read_results(data)
        groups = sorted({(r.method or "?", r.component) for r in res.rows if r.single})
        keys = _run_keys(data)
        grids = []
        for method, component in groups:
            m = None if method == "?" else method
            g = heatmap_grid(res, m, component)
            best = best_per_layer(res, min_coherence, method=m, component=component)
            grids.append({
                "method": method, "component": component,
                "layers": g.layers, "coefs": g.coefs,
                "delta": g.delta, "coherence": g.coherence, "trait": g.trait,
                "runs": [[None if i is None else keys[i] for i in row] for row in g.keys],
                "best_per_layer": [
                    {"layer": s.layer, "n_runs": s.n_runs,
                     "best": None if s.best is None else {
                         "coef": s.best.coef, "delta": s.best.delta,
                         "trait_mean": s.best.trait_mean, "coherence_mean": s.best.coherence_mean,
                         "run": keys[_index_of(res.rows, s.best)]}}
                    for s in best.values()
                ],
            })
        entries = {str(e.get("key")): e for e in data.get("runs") or [] if isinstance(e, dict)}
        runs = [
            {"config_run": self._run_of(lay, path.parent, entries.get(keys[i], {})),
             "run": keys[i], "layers": list(r.layers), "coefs": list(r.coefs), "method": r.method,
             "component": r.component, "trait_mean": r.trait_mean,
             "coherence_mean": r.coherence_mean, "delta": r.delta, "n": r.n,
             "single": r.single, "has_responses": bool(r.responses)}
            for i, r in enumerate(res.rows)
        ]
        return {
            "schema_version": SCHEMA_VERSION, "experiment": experiment, "variant": variant,
            "trait": trait, "position": pos, "prompt_set": prompt_set,
            "results_file": path.relative_to(self.root).as_posix(),
            "min_coherence": min_coherence,
            "baseline": {"trait_mean": res.baseline_trait_mean,
                         "coherence_mean": res.baseline_coherence_mean},
            "vector_source": data.get("vector_source"), "judge": data.get("judge"),
            "groups": grids, "runs": runs,
        }

    def steering_responses(self, experiment: str, variant: str, trait: str, position: str,
                           prompt_set: str, run: str) -> dict:
        """The judged responses of one run (``run`` from the steering data, or ``baseline``)."""
        lay = self.layout(experiment)
        path, pos = self._results_path(lay, trait, variant, position, prompt_set)
        data = _read(self.root, path)
        if run == "baseline":
            saved = (data.get("baseline") or {}).get("responses")
            rpath = (self._saved_responses(path, saved, run) if saved
                     else lay.baseline_path(trait, variant, pos, prompt_set))
            label = "baseline (no steering)"
        else:
            res = read_results(data)
            keys = _run_keys(data)
            if run not in keys:
                raise NotFound(f"no run {run!r} in {path.name}")
            row = res.rows[keys.index(run)]
            if not row.responses:
                raise NotFound(f"run {run!r} has no saved responses")
            rpath = self._saved_responses(path, row.responses, run)
            label = f"L{'+'.join(map(str, row.layers))} c{'/'.join(f'{c:g}' for c in row.coefs)} {row.method}"
        inside(path.parent, rpath)
        raw = _read(self.root, rpath)
        items = raw.get("responses", []) if isinstance(raw, dict) else raw
        if not isinstance(items, list):
            raise PipelineError(f"{rpath.name} holds no list of responses")
        return {"run": run, "label": label, "file": rpath.relative_to(self.root).as_posix(),
                "responses": [_response_row(x) for x in items[:MAX_RESPONSES] if isinstance(x, dict)],
                "n_total": len(items)}

    @staticmethod
    def _saved_responses(results: Path, saved: str, run: str) -> Path:
        """A run's responses file, named relative to its results folder (or its responses/)."""
        rel = Path(str(saved))
        if rel.is_absolute() or ".." in rel.parts:
            raise LayoutError(f"run {run!r} names responses outside its folder: {saved}")
        path = results.parent / rel
        if not inside(results.parent, path).is_file():
            path = results.parent / "responses" / rel
        return path

    # inference --------------------------------------------------------------------------
    def inference_index(self, experiment: str, variant: str) -> dict:
        """Traits, prompt sets and ids with projections on a variant, plus prompt texts."""
        lay = self.layout(experiment)
        if variant not in lay.variants("inference"):
            raise NotFound(f"no inference data for variant {variant!r}; "
                           f"found: {', '.join(lay.variants('inference')) or 'none'}")
        traits = lay.projection_traits(variant)
        sets: dict[str, set[str]] = defaultdict(set)
        for t in traits:
            for s in lay.projection_sets(variant, t):
                sets[s] |= set(lay.projection_ids(variant, t, s))
        prompt_sets = {}
        for s, ids in sorted(sets.items()):
            order = sorted(ids, key=lambda x: (0, int(x), "") if x.isdigit() else (1, 0, x))
            prompt_sets[s] = {"ids": order, "notes": _prompt_notes(s)}
        return {
            "experiment": experiment, "variant": variant, "traits": traits,
            "prompt_sets": prompt_sets, "replay_sources": lay.replay_sources(variant),
            "other_variants": [v for v in lay.variants("inference") if v != variant],
        }

    def _trace(self, lay: Layout, variant: str, trait: str, prompt_set: str, prompt_id: str,
               replayed_from: str | None = None) -> dict:
        ppath = lay.projection_path(variant, trait, prompt_set, prompt_id, replayed_from)
        proj = _read(self.root, ppath)
        rpath = lay.inference_response_path(variant, prompt_set, prompt_id, replayed_from)
        resp = _read(self.root, rpath) if inside(self.root, rpath).is_file() else {}
        tokens = {ph: list((resp.get(ph) or {}).get("tokens") or []) for ph in ("prompt", "response")}
        series = _series(proj)
        n = {ph: max((len(s[ph]) for s in series), default=0) for ph in ("prompt", "response")}
        for ph in ("prompt", "response"):  # label-less positions if the response file is missing
            if len(tokens[ph]) < n[ph]:
                tokens[ph] += [f"#{i}" for i in range(len(tokens[ph]), n[ph])]
        return {
            "variant": variant, "replayed_from": replayed_from,
            "projection_file": ppath.relative_to(self.root).as_posix(),
            "response_file": rpath.relative_to(self.root).as_posix() if resp else None,
            "series": series, "tokens": tokens,
            "token_norms": proj.get("token_norms"), "activation_norms": proj.get("activation_norms"),
            "massive": proj.get("massive"),  # massive dims' values, to toggle cleaning
            "text": {ph: (resp.get(ph) or {}).get("text") for ph in ("prompt", "response")},
            "metadata": {**(proj.get("metadata") or {}), "response": resp.get("metadata")},
        }

    def projection(self, experiment: str, variant: str, trait: str, prompt_set: str,
                   prompt_id: str, compare: str | None = None) -> dict:
        """Per-token projections of one prompt, and optionally the same prompt on ``compare``.

        The comparison prefers ``compare``'s replay of ``variant``'s responses (same tokens,
        so a token-by-token difference is meaningful), else ``compare``'s own generation.
        """
        lay = self.layout(experiment)
        out = {"schema_version": SCHEMA_VERSION, "experiment": experiment, "trait": trait,
               "prompt_set": prompt_set, "id": str(prompt_id),
               "main": self._trace(lay, variant, trait, prompt_set, str(prompt_id))}
        if compare:
            check_name("model variant", compare)
            replay = lay.projection_path(compare, trait, prompt_set, str(prompt_id), variant)
            source = variant if inside(self.root, replay).is_file() else None
            try:
                other = self._trace(lay, compare, trait, prompt_set, str(prompt_id), source)
            except NotFound:
                raise NotFound(f"variant {compare!r} has no projection of {trait} for "
                               f"{prompt_set}/{prompt_id}") from None
            out["other"] = other
            out["same_tokens"] = other["tokens"] == out["main"]["tokens"]
        return out


def _method_grids(rows: list[dict]) -> list[dict]:
    """One layer × method grid per (position, component) of a trait's evaluation rows."""
    out = []
    for pos, comp in sorted({(str(r.get("position")), str(r.get("component", "residual"))) for r in rows}):
        sub = [r for r in rows if str(r.get("position")) == pos
               and str(r.get("component", "residual")) == comp]
        layers = sorted({int(r["layer"]) for r in sub})
        methods = sorted({str(r["method"]) for r in sub})
        metrics = {}
        for m in METRICS:
            grid: list[list[float | None]] = [[None] * len(layers) for _ in methods]
            for r in sub:
                val = r.get(m)
                if isinstance(val, bool):
                    val = float(val)
                grid[methods.index(str(r["method"]))][layers.index(int(r["layer"]))] = val
            metrics[m] = grid
        intervals = {}
        for m in CI_METRICS:
            cis: list[list[list[float] | None]] = [[None] * len(layers) for _ in methods]
            for r in sub:
                ci = r.get(f"{m}_ci")
                if isinstance(ci, list) and len(ci) == 2:
                    cis[methods.index(str(r["method"]))][layers.index(int(r["layer"]))] = ci
            intervals[m] = cis
        out.append({"position": pos, "component": comp, "layers": layers, "methods": methods,
                    "metrics": metrics, "intervals": intervals})
    return out


def _index_of(rows: list, row: object) -> int:
    return next(i for i, r in enumerate(rows) if r is row)


def _run_keys(data: dict) -> list[str]:
    """A stable id per run that ``read_results`` keeps: its ``key``, else ``#index``."""
    keys = []
    for i, run in enumerate(data.get("runs") or []):
        cfg = (run or {}).get("config") or {}
        if not (cfg.get("vectors") or cfg.get("layers")):
            continue  # read_results skips these too; keep the two lists aligned
        keys.append(str(run.get("key") or f"#{i}"))
    return keys


def _response_row(item: dict) -> dict:
    def first(*names):
        for n in names:
            if item.get(n) is not None:
                return item[n]
        return None

    return {
        "question": first("question", "prompt"),
        "response": first("response", "answer", "text"),
        "trait_score": first("trait_score", "trait", "score"),
        "coherence_score": first("coherence_score", "coherence"),
    }


def _series(proj: dict) -> list[dict]:
    """Single- and multi-vector projection files alike, as a list of labelled series."""
    meta = proj.get("metadata") or {}
    p = proj.get("projections")
    if isinstance(p, list):
        items = p
    elif isinstance(p, dict):
        items = [{**(meta.get("vector_source") or {}), **p}]
    else:
        raise PipelineError("projection file has no 'projections'")
    out = []
    for it in items:
        label = " ".join(str(x) for x in (
            f"L{it['layer']}" if it.get("layer") is not None else None,
            it.get("method"), it.get("component"), it.get("position")) if x)
        out.append({"label": label or "projection", "layer": it.get("layer"),
                    "method": it.get("method"),
                    "selection_source": it.get("selection_source"),
                    "prompt": [float(x) for x in it.get("prompt") or []],
                    "response": [float(x) for x in it.get("response") or []]})
    return out


def _prompt_notes(prompt_set: str) -> dict[str, dict]:
    """``id -> {text, note}`` from ``datasets/inference/{set}.json`` when it exists."""
    try:
        path = layout_mod.prompt_set_path(prompt_set)
    except LayoutError:
        return {}
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    items = data.get("prompts", []) if isinstance(data, dict) else data
    out = {}
    for it in items if isinstance(items, list) else []:
        if isinstance(it, dict) and "id" in it:
            out[str(it["id"])] = {"text": it.get("text", it.get("prompt")), "note": it.get("note")}
    return out
