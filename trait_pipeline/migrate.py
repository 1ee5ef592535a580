"""``python -m trait_pipeline.migrate``: move an experiment from the original flat layout
into the variant layout, with nothing lost.

    python -m trait_pipeline.migrate rm_syco                 # dry run: print the plan
    python -m trait_pipeline.migrate rm_syco --apply         # carry it out
    python -m trait_pipeline.migrate path/to/exp --apply --model-slug llama-3.1-8b=base

What goes where (``E`` = the experiment dir, ``Vx``/``Va`` = its extraction/application
variant, ``Vc`` = the variant whose model matches a comparison slug):

- ``E/extraction/{cat}/{trait}/{responses,vetting,val_responses,logit_lens.json}`` move to
  ``.../{trait}/{Vx}/``; ``vectors/.../layer{L}.pt`` become ``layer{L}.safetensors`` (key
  ``vector`` + provenance) and ``activations/.../{train,val}_all_layers.pt`` become
  ``{train,val}.safetensors`` with ``pos``/``neg`` tensors; ``extraction_evaluation.json``
  becomes ``extraction/_evaluation/{Vx}.json`` (rows under ``results``).
- ``E/steering/{cat}/{trait}/{P}/...`` moves to ``.../{trait}/{Va}/{P}/steering/...``; the
  oldest form without ``{P}`` takes the position its runs record, else ``--steering-position``
  (default ``response[:]``, the reference's choice for that legacy layout).
- ``E/inference/{raw/residual,responses,sae,massive_activations}`` go under
  ``inference/{Va}/`` (raw ``.pt`` become ``.safetensors`` with ``prompt.{component}`` /
  ``response.{component}`` ``[n_tok, n_layers, d]``), ``inference/{cat}/{trait}/residual_stream/{S}``
  becomes ``inference/{Va}/projections/{cat}/{trait}/{S}``, and ``inference/models/{slug}/...``
  does the same under ``inference/{Vc}/``.

Safety: ``.pt`` files are opened with ``torch.load(weights_only=True)`` only; every source
file's sha256 and destination go to ``E/.migration/manifest.json`` before anything moves; the
original bytes of converted files are kept under ``E/.migration/originals/``; a destination
that exists with other content, a refused ``.pt`` or an unmatched model slug stops the run
before anything moves. A rerun resumes an interrupted run; on a migrated tree it changes
nothing. Files it does not know are left where they are and listed. See docs/migrate.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PipelineError, one_line
from .jsonio import read_json, write_json
from .layout import (
    NAME_RE,
    SCHEMA_VERSION,
    STEERING_PROMPT_SET,
    TRAIT_RE,
    Layout,
    LayoutError,
    default_experiments_dir,
    project_dir,
)
from .positions import PositionError, canonical

MANIFEST_VERSION = 1
DEFAULT_LEGACY_STEERING_POSITION = "response[:]"
_LAYER_PT = re.compile(r"layer(\d+)\.pt")
_ACT_PT = {"train_all_layers.pt": "train", "val_all_layers.pt": "val"}
_TRAIT_CHILDREN = ("responses", "vetting", "val_responses", "logit_lens.json", "activations", "vectors")


@dataclass
class Options:
    """What the user can say on the command line beyond the experiment."""

    # the preset goes to {conf_dir}/experiment/{name}.yaml: the user's project conf/, which
    # the stages search before the shipped configs (in a clone run from its root, the same dir)
    conf_dir: Path = field(default_factory=lambda: project_dir() / "conf")
    write_preset: bool = True
    model_slugs: dict[str, str] = field(default_factory=dict)  # inference/models/{slug} -> variant
    add_variants: dict[str, dict] = field(default_factory=dict)  # name -> {model, lora, use_chat_template}
    extraction_variant: str | None = None
    application_variant: str | None = None
    steering_position: str | None = None  # for steering results saved without a position level
    set_suffix: dict[str, str] = field(default_factory=dict)  # "{set}_{suffix}" -> variant, set


@dataclass
class Action:
    """One source file and what happens to it."""

    src: str  # relative to the experiment dir
    dst: str
    kind: str  # move | convert
    fmt: str = ""  # convert: vector | activations | raw | evaluation
    note: str = ""
    params: dict = field(default_factory=dict)
    sha256: str = ""
    size: int = 0
    done: bool = False  # the destination already holds it (an interrupted run)


@dataclass
class Plan:
    root: Path
    layout: Layout
    table: object  # legacy_formats.VariantTable
    actions: list[Action] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)  # path -> why it stays
    new_layout: list[str] = field(default_factory=list)  # files already in the variant layout
    errors: list[str] = field(default_factory=list)  # refused .pt, unknown slugs, ...
    conflicts: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    preset_path: Path | None = None
    preset_text: str | None = None
    preset_status: str = "skip"  # write | same | agrees | conflict | skip
    traits: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.conflicts

    @property
    def pending(self) -> list[Action]:
        return [a for a in self.actions if not a.done]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- planning
class _Scanner:
    """Walks the old tree once and fills a :class:`Plan`."""

    def __init__(self, plan: Plan, opts: Options) -> None:
        self.p, self.o = plan, opts
        self.root, self.lay, self.t = plan.root, plan.layout, plan.table
        self.variants = set(self.t.variants)
        self.new_dirs: list[Path] = []
        self.claimed: set[str] = set()

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def files(self, d: Path) -> list[Path]:
        return sorted(p for p in d.rglob("*") if p.is_file() or p.is_symlink())

    def leave(self, path: Path, reason: str) -> None:
        for f in ([path] if path.is_file() else self.files(path)):
            self.p.left.setdefault(self.rel(f), reason)

    def add(self, src: Path, dst: Path, kind: str = "move", fmt: str = "", note: str = "", **params) -> None:
        if src.is_symlink():
            self.leave(src, "a symbolic link: not moved")
            return
        self.p.actions.append(Action(self.rel(src), self.rel(dst), kind, fmt, note, params))
        self.claimed.add(self.rel(src))

    def move_tree(self, src_dir: Path, dst_dir: Path) -> None:
        for f in self.files(src_dir):
            self.add(f, dst_dir / f.relative_to(src_dir))

    # extraction ---------------------------------------------------------------------
    def extraction(self) -> None:
        base = self.root / "extraction"
        if not base.is_dir():
            return
        vx = self.t.extraction
        for child in sorted(base.iterdir()):
            if child.is_file():
                if child.name == "extraction_evaluation.json":
                    self.add(child, self.lay.evaluation_path(vx), "convert", "evaluation",
                             "rows renamed all_results -> results")
                else:
                    self.leave(child, "experiment-level file: not variant-scoped, kept in place")
                continue
            if child.name == "_evaluation":
                self.new_dirs.append(child)
                continue
            for trait_dir in sorted(child.iterdir()):
                trait = f"{child.name}/{trait_dir.name}"
                if not trait_dir.is_dir() or not TRAIT_RE.match(trait):
                    continue  # reported as unrecognised at the end
                self._trait(trait, trait_dir, vx)

    def _trait(self, trait: str, d: Path, vx: str) -> None:
        lay = self.lay
        for sub in sorted(d.iterdir()):
            if sub.is_dir() and sub.name in self.variants:
                self.new_dirs.append(sub)
                self.p.traits.append(trait)
            elif sub.name not in _TRAIT_CHILDREN:
                continue
            else:
                self.p.traits.append(trait)
                if sub.name == "logit_lens.json":
                    self.add(sub, lay.logit_lens_path(trait, vx))
                elif sub.name == "responses":
                    self.move_tree(sub, lay.responses_dir(trait, vx))
                elif sub.name == "vetting":
                    self.move_tree(sub, lay.vetting_dir(trait, vx))
                elif sub.name == "val_responses":
                    self.move_tree(sub, lay.extraction_dir(trait, vx) / "val_responses")
                elif sub.name == "vectors":
                    self._vectors(trait, sub, vx)
                elif sub.name == "activations":
                    self._activations(trait, sub, vx)

    def _pos(self, name: str) -> str | None:
        try:
            return canonical(name)
        except PositionError:
            return None

    def _vectors(self, trait: str, d: Path, vx: str) -> None:
        from .legacy_formats import read_vector_pt

        meta_cache: dict[Path, dict] = {}
        for f in self.files(d):
            parts = f.relative_to(d).parts
            if len(parts) != 4:
                continue
            pos = self._pos(parts[0])
            comp, method = parts[1], parts[2]
            if pos is None or not NAME_RE.match(comp) or not NAME_RE.match(method):
                continue
            vdir = self.lay.vectors_dir(trait, vx, pos, comp, method)
            if parts[3] == "metadata.json":
                self.add(f, vdir / "metadata.json")
                continue
            m = _LAYER_PT.fullmatch(parts[3])
            if not m:
                continue
            try:
                vec = read_vector_pt(f)
            except PipelineError as exc:
                self.p.errors.append(str(exc))
                continue
            mpath = f.parent / "metadata.json"
            if mpath not in meta_cache:
                try:
                    meta_cache[mpath] = read_json(mpath) if mpath.is_file() else {}
                except PipelineError:
                    meta_cache[mpath] = {}
            old_meta = meta_cache[mpath] if isinstance(meta_cache[mpath], dict) else {}
            layer = int(m.group(1))
            variant = self.t.variants[vx]
            provenance = {
                "experiment": self.lay.experiment, "trait": trait,
                "model": old_meta.get("model") or variant["model"], "revision": None,
                "lora": variant["lora"], "model_variant": vx, "layer": layer,
                "component": comp, "position": pos, "method": method, "dataset_hash": None,
                "source_dtype": str(vec.dtype).replace("torch.", ""),
            }
            self.add(f, self.lay.vector_path(trait, vx, pos, comp, method, layer), "convert", "vector",
                     provenance=provenance)

    def _activations(self, trait: str, d: Path, vx: str) -> None:
        from .legacy_formats import read_activations_pt, split_rows

        for f in self.files(d):
            parts = f.relative_to(d).parts
            if len(parts) != 3:
                continue
            pos, comp, name = self._pos(parts[0]), parts[1], parts[2]
            if pos is None or not NAME_RE.match(comp):
                continue
            adir = self.lay.activations_dir(trait, vx, pos, comp)
            if name == "metadata.json":
                self.add(f, adir / "metadata.json")
                continue
            if name not in _ACT_PT:
                continue
            split = _ACT_PT[name]
            try:
                t = read_activations_pt(f)
            except PipelineError as exc:
                self.p.errors.append(str(exc))
                continue
            try:
                meta = read_json(f.parent / "metadata.json")
                counts = split_rows(meta if isinstance(meta, dict) else {}, split, int(t.shape[0]))
            except PipelineError as exc:
                counts = f"no readable metadata.json beside it ({one_line(exc)})"
            if isinstance(counts, str):
                self.add(f, adir / name, note=f"kept as .pt, not converted: {counts}")
                continue
            self.add(f, adir / f"{split}.safetensors", "convert", "activations",
                     n_pos=counts[0], n_neg=counts[1], split=split, trait=trait, position=pos,
                     component=comp, model_variant=vx, model=self.t.variants[vx]["model"])

    # steering -----------------------------------------------------------------------
    def steering(self) -> None:
        base = self.root / "steering"
        if not base.is_dir():
            return
        va = self.t.application
        for cat in sorted(p for p in base.iterdir() if p.is_dir()):
            for trait_dir in sorted(p for p in cat.iterdir() if p.is_dir()):
                trait = f"{cat.name}/{trait_dir.name}"
                if TRAIT_RE.match(trait):
                    self._steering_trait(trait, trait_dir, va)

    def _steering_trait(self, trait: str, d: Path, va: str) -> None:
        legacy = [c for c in (d / "results.json", d / "responses") if c.exists()]
        if legacy:
            pos = self._legacy_position(d / "results.json", trait)
            self._steering_set(trait, d, va, pos, STEERING_PROMPT_SET, legacy)
        for sub in sorted(p for p in d.iterdir() if p.is_dir() and p.name != "responses"):
            if sub.name in self.variants:
                self.new_dirs.append(sub)
                continue
            pos = self._pos(sub.name)
            if pos is None:
                continue
            here = [c for c in (sub / "results.json", sub / "responses") if c.exists()]
            if here:
                self._steering_set(trait, sub, va, pos, STEERING_PROMPT_SET, here)
            # a later variant-less form: {P}/{prompt_set}/results.json
            for ps in sorted(p for p in sub.iterdir() if p.is_dir() and p.name != "responses"):
                inner = [c for c in (ps / "results.json", ps / "responses") if c.exists()]
                if inner and NAME_RE.match(ps.name):
                    self._steering_set(trait, ps, va, pos, ps.name, inner)

    def _steering_set(self, trait: str, d: Path, va: str, pos: str, prompt_set: str,
                      items: list[Path]) -> None:
        sdir = self.lay.steering_dir(trait, va, pos, prompt_set)
        for item in items:
            if item.is_file():
                self.add(item, sdir / item.name)
                self._check_steering_model(item, va)
            else:
                self.move_tree(item, sdir / item.name)

    def _legacy_position(self, results: Path, trait: str) -> str:
        where = self.rel(results.parent)
        recorded: set[str] = set()
        if results.is_file():
            try:
                data = read_json(results)
                runs = data.get("runs") if isinstance(data, dict) else None
                for run in runs or []:
                    cfg = (run or {}).get("config") or {}
                    for vec in cfg.get("vectors") or []:
                        if isinstance(vec, dict) and vec.get("position") is not None:
                            recorded.add(canonical(str(vec["position"])))
                    if cfg.get("position") is not None:
                        recorded.add(canonical(str(cfg["position"])))
            except (PipelineError, PositionError, AttributeError, TypeError):
                recorded = set()
        if len(recorded) == 1:
            pos = recorded.pop()
            self.p.decisions.append(f"{where}: no position level; its runs record position {pos}")
        elif self.o.steering_position is not None:
            pos = canonical(self.o.steering_position)
            self.p.decisions.append(f"{where}: no position level; --steering-position {pos}")
        else:
            pos = DEFAULT_LEGACY_STEERING_POSITION
            why = "its runs record several positions" if recorded else "its runs record none"
            self.p.decisions.append(
                f"{where}: no position level and {why}; default position {pos} "
                "(choose another with --steering-position)"
            )
        return pos

    def _check_steering_model(self, results: Path, va: str) -> None:
        if results.name != "results.json":
            return
        try:
            data = read_json(results)
        except PipelineError:
            return
        steered = data.get("steering_model") if isinstance(data, dict) else None
        model = self.t.variants[va]["model"]
        if steered and steered != model:
            self.p.decisions.append(
                f"{self.rel(results)}: steered {steered}, but the application variant {va!r} "
                f"loads {model}; filed under {va!r} as the layout rule says"
            )

    # inference ----------------------------------------------------------------------
    def inference(self) -> None:
        base = self.root / "inference"
        if not base.is_dir():
            return
        skip = {"models", "_compare"} | self.variants
        for name in sorted(skip & {p.name for p in base.iterdir() if p.is_dir()}):
            if name != "models":
                self.new_dirs.append(base / name)
        self._inference_tree(base, self.t.application, skip, default=True)
        models = base / "models"
        if models.is_dir():
            for slug_dir in sorted(p for p in models.iterdir() if p.is_dir()):
                variant = self._slug_variant(slug_dir.name)
                if variant is not None:
                    self._inference_tree(slug_dir, variant, set(), default=False)

    def _slug_variant(self, slug: str) -> str | None:
        from .legacy_formats import model_slug

        where = f"inference/models/{slug}"
        if slug in self.o.model_slugs:
            v = self.o.model_slugs[slug]
            self.p.decisions.append(f"{where}: variant {v!r} (--model-slug)")
            return v
        listing = ", ".join(f"{n}={v['model']}" + (f"+{v['lora']}" if v["lora"] else "")
                            for n, v in self.t.variants.items())
        hint = (f"map it with --model-slug {slug}=VARIANT (add a new variant first with "
                "--add-variant NAME=MODEL if none fits)")
        matches = [n for n, v in self.t.variants.items() if model_slug(v["model"]) == slug.lower()]
        if len(matches) > 1:
            plain = [n for n in matches if not self.t.variants[n]["lora"]]
            if len(plain) == 1:
                self.p.decisions.append(
                    f"{where}: variant {plain[0]!r} (its model matches the slug and it has no "
                    f"adapter; {', '.join(m for m in matches if m != plain[0])} add one)"
                )
                return plain[0]
            self.p.errors.append(f"{where}: the slug {slug!r} matches several variants "
                                 f"({', '.join(matches)}); {hint}")
            return None
        if not matches:
            self.p.errors.append(f"{where}: unknown model slug {slug!r}: no variant's model matches "
                                 f"it (variants: {listing}); {hint}")
            return None
        self.p.decisions.append(f"{where}: variant {matches[0]!r} (its model matches the slug)")
        return matches[0]

    def _target_set(self, variant: str, prompt_set: str, where: Path) -> tuple[str, str] | None:
        """Variant and prompt-set name of an old set folder (suffix and ``_name`` rules)."""
        name = prompt_set
        for suffix, v in self.o.set_suffix.items():
            if name.endswith("_" + suffix) and len(name) > len(suffix) + 1:
                name, variant = name[: -len(suffix) - 1], v
                self.p.decisions.append(f"{self.rel(where)}: set {prompt_set} -> variant {v!r}, "
                                        f"set {name} (--set-suffix {suffix}={v})")
                break
        if name.startswith("_") and NAME_RE.match(name.lstrip("_")):
            new = name.lstrip("_")
            self.p.decisions.append(f"{self.rel(where)}: set {name} renamed {new} "
                                    "(set names may not start with '_')")
            name = new
        if not NAME_RE.match(name):
            self.leave(where, f"prompt set name {prompt_set!r} is not allowed in the new layout")
            return None
        return variant, name

    def _inference_tree(self, d: Path, variant: str, skip: set[str], default: bool) -> None:
        from .legacy_formats import read_raw_pt

        lay = self.lay
        for sub in sorted(p for p in d.iterdir() if p.is_dir() and p.name not in skip):
            if sub.name == "raw":
                for kind in sorted(p for p in sub.iterdir() if p.is_dir()):
                    if kind.name == "internals":
                        self._legacy(kind, d, variant, "a layer-internals capture: no stage reads it")
                    if kind.name != "residual":
                        continue
                    for set_dir in sorted(p for p in kind.iterdir() if p.is_dir()):
                        target = self._target_set(variant, set_dir.name, set_dir)
                        if target is None:
                            continue
                        v, ps = target
                        for f in sorted(set_dir.glob("*.pt")):
                            if not NAME_RE.match(f.stem):
                                continue
                            try:
                                cap = read_raw_pt(f)
                            except PipelineError as exc:
                                self.p.errors.append(str(exc))
                                continue
                            if isinstance(cap, str):
                                self.add(f, lay.raw_dir(v, ps) / f.name,
                                         note=f"kept as .pt, not converted: {cap}")
                            else:
                                self.add(f, lay.raw_path(v, ps, f.stem), "convert", "raw",
                                         model_variant=v, prompt_set=ps, prompt_id=f.stem)
            elif sub.name == "responses":
                for set_dir in sorted(p for p in sub.iterdir() if p.is_dir()):
                    target = self._target_set(variant, set_dir.name, set_dir)
                    if target is None:
                        continue
                    for f in sorted(set_dir.glob("*.json")):
                        if NAME_RE.match(f.stem):
                            self.add(f, lay.inference_response_path(*target, f.stem))
            elif sub.name == "sae":
                self.move_tree(sub, lay.sae_dir(variant))
            elif sub.name == "massive_activations":
                self.move_tree(sub, lay.massive_activations_dir(variant))
            else:  # a trait category: {cat}/{trait}/residual_stream/{set}/{id}.json
                for trait_dir in sorted(p for p in sub.iterdir() if p.is_dir()):
                    trait = f"{sub.name}/{trait_dir.name}"
                    if not TRAIT_RE.match(trait):
                        continue
                    attn = trait_dir / "attn_stream"
                    if attn.is_dir():
                        self._legacy(attn, d, variant, "attn_out projections (attn_stream): the new layout "
                                                       "has one projection per trait; infer component=attn_out redoes them")
                    stream = trait_dir / "residual_stream"
                    if not stream.is_dir():
                        continue
                    for set_dir in sorted(p for p in stream.iterdir() if p.is_dir()):
                        target = self._target_set(variant, set_dir.name, set_dir)
                        if target is None:
                            continue
                        v, ps = target
                        for f in sorted(set_dir.glob("*.json")):
                            if NAME_RE.match(f.stem):
                                self.add(f, lay.projection_path(v, trait, ps, f.stem))

    def _legacy(self, src_dir: Path, tree: Path, variant: str, why: str) -> None:
        """Known files no stage reads: kept, as they are, under the variant's ``legacy/``."""
        for f in self.files(src_dir):
            self.add(f, self.lay.inference_legacy_dir(variant) / f.relative_to(tree), note=why)

    # everything else ----------------------------------------------------------------
    def finish(self) -> None:
        new_prefixes = tuple(self.rel(d) + "/" for d in self.new_dirs)
        skip = self.rel(self.lay.migration_dir()) + "/"
        for f in self.files(self.root):
            r = self.rel(f)
            if r.startswith(skip) or r in self.claimed or r in self.p.left:
                continue
            if r.startswith(new_prefixes):
                self.p.new_layout.append(r)
            elif r == "config.json":
                self.p.left[r] = "read to write the experiment preset; kept as it is"
            elif r.split("/")[0] == "analysis":
                self.p.left[r] = "analysis/ is not variant-scoped in the new layout; kept in place"
            else:
                self.p.left[r] = "not part of the original layout the migration knows; left in place"
        self.p.traits = sorted(set(self.p.traits))


def _variant_table(root: Path, opts: Options):
    from .legacy_formats import VariantTable, convert_config

    cfg_path = root / "config.json"
    table = convert_config(read_json(cfg_path) if cfg_path.is_file() else None)
    for name, spec in opts.add_variants.items():
        if name in table.variants and table.variants[name] != spec:
            raise PipelineError(f"--add-variant {name}: config.json already defines {name!r} "
                                f"as {table.variants[name]['model']}")
        table.variants[name] = spec
    if table.schema == "none" and not table.variants:
        raise PipelineError(
            f"{root}/config.json is missing: name the models with --add-variant NAME=MODEL and "
            "--extraction-variant/--application-variant"
        )
    first = next(iter(table.variants))
    table.extraction = opts.extraction_variant or table.extraction or first
    table.application = opts.application_variant or table.application or first
    VariantTable.check(table)
    for slug, v in opts.model_slugs.items():
        if v not in table.variants:
            raise PipelineError(f"--model-slug {slug}={v}: unknown variant {v!r}; defined: "
                                f"{', '.join(table.variants)} (add it with --add-variant {v}=MODEL)")
    for suffix, v in opts.set_suffix.items():
        if v not in table.variants:
            raise PipelineError(f"--set-suffix {suffix}={v}: unknown variant {v!r}; defined: "
                                f"{', '.join(table.variants)}")
    return table


def resolve_experiment(target: str, experiments: Path | None = None) -> Path:
    """An experiment directory from a path or a name under the experiments directory."""
    as_path = Path(target)
    if as_path.is_dir():
        root = as_path.resolve()
    else:
        base = experiments or default_experiments_dir()
        root = (Path(base) / target).resolve()
        if not root.is_dir():
            raise PipelineError(f"no experiment {target!r}: neither a directory nor {root}")
    if not NAME_RE.match(root.name):
        raise PipelineError(f"bad experiment directory name {root.name!r}: expected letters, digits, "
                            "'_', '-' or '.'")
    return root


def plan_migration(target: str | Path, opts: Options | None = None,
                   experiments: Path | None = None) -> Plan:
    """Look at the tree and decide everything; touches nothing."""
    opts = opts or Options()
    root = resolve_experiment(str(target), experiments)
    table = _variant_table(root, opts)
    plan = Plan(root=root, layout=Layout(root.parent, root.name), table=table)
    plan.decisions += table.notes
    scan = _Scanner(plan, opts)
    try:
        scan.extraction()
        scan.steering()
        scan.inference()
    except LayoutError as exc:
        raise PipelineError(str(exc)) from None
    scan.finish()
    for a in plan.actions:
        src = root / a.src
        a.sha256, a.size = sha256_file(src), src.stat().st_size
    _check_destinations(plan)
    _plan_preset(plan, opts)
    return plan


def _check_destinations(plan: Plan) -> None:
    from .vector_store import read_metadata

    root = plan.root
    counts = Counter(a.dst for a in plan.actions)
    for a in plan.actions:
        if counts[a.dst] > 1:
            others = [b.src for b in plan.actions if b.dst == a.dst]
            msg = f"conflict: {a.dst} would receive several files ({', '.join(others)})"
            if msg not in plan.conflicts:
                plan.conflicts.append(msg)
            continue
        dst = root / a.dst
        if a.kind == "convert":
            orig = plan.layout.migration_original_path(a.src)
            if orig.exists() and sha256_file(orig) != a.sha256:
                plan.conflicts.append(f"conflict: {plan.layout.migration_original_path(a.src).relative_to(root)} "
                                      f"already keeps other bytes than {a.src}")
        if not dst.exists():
            continue
        if a.kind == "move":
            same = dst.is_file() and sha256_file(dst) == a.sha256
        else:
            try:
                if a.fmt == "evaluation":
                    same = read_json(dst).get("source_sha256") == a.sha256
                else:
                    same = read_metadata(dst).get("source_sha256") == a.sha256
            except Exception:  # noqa: BLE001 (unreadable destination = different content)
                same = False
        if same:
            a.done = True
        else:
            plan.conflicts.append(f"conflict: {a.dst} exists with different content (from {a.src})")


# ----------------------------------------------------------------------------- preset
def preset_text(name: str, table, traits: list[str]) -> str:
    """The ``conf/experiment/{name}.yaml`` preset for a migrated experiment."""
    lines = [
        "# @package _global_",
        (f"# Written by `python -m trait_pipeline.migrate` from experiments/{name}/config.json "
         f"({table.schema} schema)."),
    ]
    lines += [f"# note: {n}" for n in table.notes]
    lines += [f"experiment: {json.dumps(name)}", "variants:"]
    for vname, v in table.variants.items():
        fields = [f"model: {json.dumps(v['model'])}"]
        if v.get("lora"):
            fields.append(f"lora: {json.dumps(v['lora'])}")
        fields.append(f"use_chat_template: {'true' if v['use_chat_template'] else 'false'}")
        lines.append(f"  {vname}: {{{', '.join(fields)}}}")
    lines.append(f"stage_defaults: {{extraction: {table.extraction}, application: {table.application}}}")
    lines.append("dtype: bfloat16  # the original loaded every model in bf16")
    if traits:
        lines.append(f"trait: {traits[0]}  # traits with data: {', '.join(traits)}")
    if table.system_prompt:
        lines.append(f"system_prompt: {json.dumps(table.system_prompt)}")
    text = "\n".join(lines) + "\n"
    _check_preset(text, name, table)
    return text


def _check_preset(text: str, name: str, table) -> None:
    import yaml

    data = yaml.safe_load(text)
    got = {n: (v.get("model"), v.get("lora")) for n, v in (data.get("variants") or {}).items()}
    want = {n: (v["model"], v.get("lora")) for n, v in table.variants.items()}
    if data.get("experiment") != name or got != want:
        raise PipelineError(f"cannot write a preset that reads back as written for {name!r}; "
                            "check the variant names in config.json")


def _plan_preset(plan: Plan, opts: Options) -> None:
    if not opts.write_preset:
        return
    import yaml

    name = plan.layout.experiment
    plan.preset_path = Path(opts.conf_dir) / "experiment" / f"{name}.yaml"
    plan.preset_text = preset_text(name, plan.table, plan.traits)
    if not plan.preset_path.is_file():
        plan.preset_status = "write"
        return
    old_text = plan.preset_path.read_text(encoding="utf-8")
    if old_text == plan.preset_text:
        plan.preset_status = "same"
        return
    try:
        old = yaml.safe_load(old_text) or {}
    except yaml.YAMLError:
        old = {}
    diffs = []
    if str(old.get("experiment")) != name:
        diffs.append(f"experiment {old.get('experiment')!r}")
    for vname, v in plan.table.variants.items():
        have = (old.get("variants") or {}).get(vname) or {}
        if have.get("model") != v["model"] or (have.get("lora") or None) != (v.get("lora") or None):
            diffs.append(f"variant {vname} is {have.get('model')!r}"
                         + (f"+{have.get('lora')!r}" if have.get("lora") else "")
                         + f", config.json says {v['model']!r}" + (f"+{v['lora']!r}" if v.get("lora") else ""))
    sd = old.get("stage_defaults") or {}
    if (sd.get("extraction"), sd.get("application")) != (plan.table.extraction, plan.table.application):
        diffs.append(f"stage_defaults {sd}")
    if diffs:
        plan.preset_status = "conflict"
        plan.conflicts.append(f"conflict: {plan.preset_path} exists and disagrees with config.json: "
                              f"{'; '.join(diffs)} (fix or remove it, or pass --no-preset)")
    else:
        plan.preset_status = "agrees"


# ----------------------------------------------------------------------------- output
def format_plan(plan: Plan) -> str:
    t = plan.table
    lines = [f"experiment {plan.layout.experiment} ({plan.root})",
             f"  config.json schema: {t.schema}; variants: "
             + ", ".join(f"{n}={v['model']}" + (f"+{v['lora']}" if v["lora"] else "")
                         for n, v in t.variants.items()),
             f"  extraction data -> {t.extraction!r}; steering and inference data -> {t.application!r}"]
    if plan.preset_path is not None:
        what = {"write": "will write", "same": "already written", "agrees": "exists and agrees; kept",
                "conflict": "CONFLICT"}[plan.preset_status]
        lines.append(f"  preset {plan.preset_path}: {what}")
    for d in plan.decisions:
        lines.append(f"  decision: {d}")
    for a in plan.actions:
        verb = {"move": "move   ", "convert": "convert"}[a.kind]
        tail = " (done already)" if a.done else ""
        note = f"  [{a.note}]" if a.note else ""
        lines.append(f"{verb} {a.src} -> {a.dst}{note}{tail}")
    for path, why in sorted(plan.left.items()):
        lines.append(f"leave   {path}: {why}")
    if plan.new_layout:
        lines.append(f"({len(plan.new_layout)} files already in the variant layout)")
    for e in plan.errors:
        lines.append(f"error: {one_line(e)}")
    for c in plan.conflicts:
        lines.append(one_line(c))
    n_conv = sum(a.kind == "convert" for a in plan.pending)
    lines.append(f"{len(plan.pending) - n_conv} to move, {n_conv} to convert, {len(plan.left)} left in place"
                 + ("" if plan.ok else f"; {len(plan.errors) + len(plan.conflicts)} problem(s): nothing will move"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- applying
def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _convert(plan: Plan, a: Action) -> None:
    """Keep the original bytes, write the new file from them, then drop the source."""
    from .layers import LAYER_CONVENTION
    from .legacy_formats import read_activations_pt, read_raw_pt, read_vector_pt
    from .vector_store import atomic_save_tensors, save_vector

    src, dst = plan.root / a.src, plan.root / a.dst
    orig = plan.layout.migration_original_path(a.src)
    if not orig.is_file() or sha256_file(orig) != a.sha256:
        _copy_atomic(src, orig)
    if sha256_file(orig) != a.sha256:
        raise PipelineError(f"{a.src} changed while migrating (sha256 differs from the plan); rerun")
    stamp = {"migrated_from": a.src, "source_sha256": a.sha256}
    if a.fmt == "vector":
        save_vector(dst, read_vector_pt(orig), {**a.params["provenance"], **stamp})
    elif a.fmt == "activations":
        t = read_activations_pt(orig)
        p = a.params
        meta = {k: p[k] for k in ("trait", "position", "component", "model_variant", "model", "split",
                                  "n_pos", "n_neg")}
        meta.update(layer_convention=LAYER_CONVENTION, source_dtype=str(t.dtype).replace("torch.", ""),
                    **stamp)
        atomic_save_tensors(dst, {"pos": t[: p["n_pos"]].clone(), "neg": t[p["n_pos"]:].clone()}, meta)
    elif a.fmt == "raw":
        cap = read_raw_pt(orig)
        if isinstance(cap, str):  # the plan checked it; the bytes are the same
            raise PipelineError(f"{a.src}: {cap}")
        p = a.params
        variant = plan.table.variants[p["model_variant"]]
        meta = {**cap.metadata, "experiment": plan.layout.experiment, "model": variant["model"],
                "lora": variant["lora"], "revision": None, "shape": "[n_tokens, n_layers, hidden]",
                "model_variant": p["model_variant"], "prompt_set": p["prompt_set"],
                "prompt_id": p["prompt_id"], "layer_convention": LAYER_CONVENTION,
                "components": sorted({k.split(".", 1)[1] for k in cap.tensors}),
                "dropped_keys": cap.dropped, **stamp}
        atomic_save_tensors(dst, cap.tensors, meta)
    elif a.fmt == "evaluation":
        write_json(dst, _evaluation(read_json(orig), plan.table.extraction, stamp))
    else:  # pragma: no cover
        raise PipelineError(f"unknown conversion {a.fmt!r}")
    src.unlink()


def _evaluation(old: dict, variant: str, stamp: dict) -> dict:
    """The experiment-wide extraction_evaluation.json as one variant's evaluation file."""
    from .evaluation import best_per_trait

    old = old if isinstance(old, dict) else {}
    rows = []
    for r in old.get("all_results") or old.get("results") or []:
        if not isinstance(r, dict):
            continue
        r = {"component": old.get("component", "residual"), "position": old.get("position"), **r}
        try:
            r["position"] = canonical(str(r["position"]))
        except PositionError:
            pass
        rows.append(r)
    out = {"schema_version": SCHEMA_VERSION, "model_variant": variant,
           "model": old.get("extraction_model"), "activation_norms": old.get("activation_norms"),
           "results": rows, **stamp}
    try:
        out["best"] = best_per_trait(rows)
    except (KeyError, TypeError):
        pass
    return out


def _manifest_entry(plan: Plan, a: Action, status: str) -> dict:
    e = {"source": a.src, "sha256": a.sha256, "size": a.size, "destination": a.dst,
         "action": a.kind, "status": status}
    if a.fmt:
        e["format"] = a.fmt
    if a.kind == "convert":
        e["original"] = plan.layout.migration_original_path(a.src).relative_to(plan.root).as_posix()
    if a.note:
        e["note"] = a.note
    return e


class _Manifest:
    """``.migration/manifest.json``: every source file, its checksum and where it went."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.path = plan.layout.migration_manifest_path()
        old = read_json(self.path) if self.path.is_file() else {}
        self.data = old if isinstance(old, dict) else {}
        self.files: dict[str, dict] = {e["source"]: e for e in self.data.get("files", [])
                                       if isinstance(e, dict) and "source" in e}
        self._last = 0.0
        self._left = [{"path": p, "reason": r, "sha256": sha256_file(plan.root / p)}
                      for p, r in sorted(plan.left.items()) if (plan.root / p).is_file()]

    def verify_previous(self) -> bool:
        """Entries an interrupted run left 'pending' whose move did finish; True if any changed."""
        changed = False
        root = self.plan.root
        for e in self.files.values():
            if e.get("status") == "done" or (root / e["source"]).exists():
                continue
            held = root / (e.get("original") or e["destination"])
            if (root / e["destination"]).exists() and held.is_file() and sha256_file(held) == e["sha256"]:
                e["status"] = "done"
                changed = True
        return changed

    def record(self, a: Action, status: str) -> None:
        self.files[a.src] = _manifest_entry(self.plan, a, status)

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 2.0:
            return
        plan = self.plan
        t = plan.table
        self.data.update({
            "schema_version": MANIFEST_VERSION, "tool": "python -m trait_pipeline.migrate",
            "experiment": plan.layout.experiment, "config_schema": t.schema,
            "variants": t.variants, "stage_defaults": {"extraction": t.extraction, "application": t.application},
            "preset": None if plan.preset_path is None else str(plan.preset_path),
            "decisions": sorted(set(self.data.get("decisions", [])) | set(plan.decisions)),
            "files": [self.files[k] for k in sorted(self.files)],
            "left_in_place": self._left,
        })
        write_json(self.path, self.data)
        self._last = now


def apply_plan(plan: Plan, progress: bool = True) -> dict:
    """Carry out a plan with no problems; returns the manifest written (or the one on disk)."""
    if not plan.ok:
        raise PipelineError(f"{len(plan.errors) + len(plan.conflicts)} problem(s) in the plan; nothing moved: "
                            + one_line((plan.errors + plan.conflicts)[0]))
    manifest = _Manifest(plan)
    fixed = manifest.verify_previous()
    todo = plan.actions
    preset = plan.preset_status == "write"
    if not todo and not preset and not fixed and manifest.path.is_file():
        return manifest.data  # already migrated: change nothing
    for a in todo:
        manifest.record(a, "done" if a.done else "pending")
    manifest.data.setdefault("runs", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    manifest.save(force=True)  # every source and checksum is on disk before anything moves
    if preset:
        from .jsonio import atomic_write_text

        atomic_write_text(plan.preset_path, plan.preset_text)
        plan.preset_status = "same"
    from tqdm import tqdm

    try:
        for a in tqdm(todo, desc="migrating", unit="file", disable=not progress or not todo):
            _apply_one(plan, a)
            a.done = True
            manifest.record(a, "done")
            manifest.save()
    finally:  # an interrupted run leaves an accurate manifest when it can (a rerun re-checks anyway)
        manifest.save(force=True)
    manifest.data["runs"][-1]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    manifest.data["runs"][-1]["files"] = len(todo)
    manifest.save(force=True)
    _remove_empty_dirs(plan)
    return manifest.data


def _apply_one(plan: Plan, a: Action) -> None:
    src, dst = plan.root / a.src, plan.root / a.dst
    if a.kind == "convert":
        if a.done:  # written by an interrupted run: keep the original, drop the source
            orig = plan.layout.migration_original_path(a.src)
            if not orig.is_file() or sha256_file(orig) != a.sha256:
                _copy_atomic(src, orig)
            src.unlink()
        else:
            _convert(plan, a)
    elif a.done:
        src.unlink()  # the same bytes are at the destination already
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            raise PipelineError(f"{a.dst} appeared while migrating; rerun to see the conflict")
        os.rename(src, dst)


def _remove_empty_dirs(plan: Plan) -> None:
    for area in ("extraction", "steering", "inference"):
        base = plan.root / area
        if not base.is_dir():
            continue
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()  # only succeeds when empty
            except OSError:
                pass


# ----------------------------------------------------------------------------- CLI
def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep or not key or not val:
            raise PipelineError(f"bad {flag} {v!r}: expected KEY=VALUE")
        out[key] = val
    return out


def _add_variants(values: list[str]) -> dict[str, dict]:
    from .legacy_formats import looks_instruct

    out = {}
    for name, spec in _pairs(values, "--add-variant").items():
        if not NAME_RE.match(name):
            raise PipelineError(f"bad --add-variant name {name!r}: expected letters, digits, '_', '-' or '.'")
        model, _, lora = spec.partition("+")
        out[name] = {"model": model, "lora": lora or None, "use_chat_template": looks_instruct(model)}
    return out


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Options]:
    ap = argparse.ArgumentParser(
        prog="python -m trait_pipeline.migrate",
        description="Move an experiment from the original flat layout into the variant layout. "
                    "Dry run unless --apply.",
    )
    ap.add_argument("experiment", help="experiment directory, or a name under the experiments directory")
    ap.add_argument("--apply", action="store_true", help="carry out the plan (default: print it)")
    ap.add_argument("--experiments", type=Path, default=None,
                    help="experiments directory for a name (default: $TRAIT_PIPELINE_EXPERIMENTS or ./experiments)")
    ap.add_argument("--conf-dir", type=Path, default=None,
                    help="config root; the preset goes to CONF_DIR/experiment/NAME.yaml "
                         "(default: ./conf of the project, $TRAIT_PIPELINE_PROJECT or here)")
    ap.add_argument("--no-preset", action="store_true", help="do not write the experiment preset")
    ap.add_argument("--model-slug", action="append", default=[], metavar="SLUG=VARIANT",
                    help="variant of the comparison model in inference/models/SLUG")
    ap.add_argument("--add-variant", action="append", default=[], metavar="NAME=MODEL[+LORA]",
                    help="a variant config.json lacks (e.g. a comparison model)")
    ap.add_argument("--extraction-variant", default=None, help="override config.json's extraction default")
    ap.add_argument("--application-variant", default=None, help="override config.json's application default")
    ap.add_argument("--steering-position", default=None, metavar="POSITION",
                    help=f"position of steering results saved without one when their runs record none "
                         f"(default {DEFAULT_LEGACY_STEERING_POSITION})")
    ap.add_argument("--set-suffix", action="append", default=[], metavar="SUFFIX=VARIANT",
                    help="inference sets named SET_SUFFIX (--output-suffix captures) go to VARIANT as SET")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    args = ap.parse_args(argv)
    if args.steering_position is not None:
        try:
            canonical(args.steering_position)
        except PositionError as exc:
            raise PipelineError(f"--steering-position: {exc}") from None
    opts = Options(
        conf_dir=args.conf_dir or project_dir() / "conf", write_preset=not args.no_preset,
        model_slugs=_pairs(args.model_slug, "--model-slug"), add_variants=_add_variants(args.add_variant),
        extraction_variant=args.extraction_variant, application_variant=args.application_variant,
        steering_position=args.steering_position, set_suffix=_pairs(args.set_suffix, "--set-suffix"),
    )
    return args, opts


def main(argv: list[str] | None = None) -> int:
    try:
        args, opts = parse_args(argv)
        plan = plan_migration(args.experiment, opts, args.experiments)
        text = format_plan(plan)
        print(text.splitlines()[-1] if args.quiet else text)
        if not plan.ok:
            print(f"error: {len(plan.errors) + len(plan.conflicts)} problem(s) above; nothing was moved",
                  file=sys.stderr)
            return 2
        if not args.apply:
            print("dry run: nothing changed; rerun with --apply to migrate")
            return 0
        if not plan.pending and plan.preset_status != "write" and plan.layout.migration_manifest_path().is_file():
            apply_plan(plan, progress=False)  # may still settle an interrupted run's manifest
            print("nothing to do: already migrated")
            return 0
        apply_plan(plan)
        print(f"migrated: manifest {plan.layout.migration_manifest_path()}")
        return 0
    except PipelineError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
