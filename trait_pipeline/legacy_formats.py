"""The original research code's files, read safely, and what they become in this project.

Used by :mod:`trait_pipeline.migrate`. Three kinds of input:

- ``config.json`` in the old schema (``extraction_model`` / ``application_model`` / legacy
  ``model`` / ``use_chat_template``) or the intermediate one (``defaults`` +
  ``model_variants``): :func:`convert_config` turns either into a variant table.
- torch pickles (``.pt``): :func:`load_pt` opens them with ``weights_only=True`` only, so a
  file holding anything but tensors and plain containers is refused, never unpickled.
- their layouts: a vector ``layer{L}.pt`` (1-D tensor), activations
  ``{train,val}_all_layers.pt`` (``[n_pos + n_neg, n_layers, d]``, positives first) and
  a raw capture ``{id}.pt`` (``{prompt|response: {text, tokens, token_ids,
  activations: {layer: {component: [n_tok, d]}}}}``).

>>> v = convert_config({"extraction_model": "google/gemma-2-2b",
...                     "application_model": "google/gemma-2-2b-it"})
>>> v.extraction, v.application, v.variants["instruct"]["model"]
('base', 'instruct', 'google/gemma-2-2b-it')
>>> model_slug("google/gemma-2-2b-it")
'gemma-2-2b-it'
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import PipelineError, one_line
from .layout import NAME_RE

_INSTRUCT_NAME = re.compile(r"(instruct|chat|-it($|[-_.]))", re.IGNORECASE)


def looks_instruct(model: str) -> bool:
    """The original's name heuristic for an instruction-tuned checkpoint (``-it``, ``-instruct``, ``-chat``)."""
    return bool(_INSTRUCT_NAME.search(str(model)))


def model_slug(model: str) -> str:
    """How the original named a comparison model's folder: the last path part, lowercased."""
    return str(model).rstrip("/").split("/")[-1].lower()


# config.json ----------------------------------------------------------------------------
@dataclass
class VariantTable:
    """The variants of an experiment and the stage defaults, as a preset needs them."""

    schema: str  # "old" | "intermediate" | "none"
    variants: dict[str, dict] = field(default_factory=dict)  # name -> {model, lora, use_chat_template}
    extraction: str = ""
    application: str = ""
    system_prompt: str | None = None
    notes: list[str] = field(default_factory=list)  # decisions worth printing in the plan

    def check(self) -> None:
        for name in self.variants:
            if not NAME_RE.fullmatch(name):
                raise PipelineError(f"bad variant name {name!r} in config.json: expected letters, digits, '_', '-' or '.'")
        for role, name in (("extraction", self.extraction), ("application", self.application)):
            if name not in self.variants:
                raise PipelineError(
                    f"{role} variant {name!r} is not defined; defined: {', '.join(self.variants) or '(none)'}"
                )


def _variant(model: str, lora: str | None, chat: bool) -> dict:
    return {"model": str(model), "lora": None if lora in (None, "") else str(lora), "use_chat_template": bool(chat)}


def convert_config(data: dict | None) -> VariantTable:
    """Variants and stage defaults from a config.json of either schema (None: no file).

    Old schema: ``extraction_model`` becomes ``base`` and ``application_model``
    ``instruct``; a single model (both equal, or only the legacy ``model``) becomes one
    variant used by both stages, named ``instruct`` when its name looks instruction-tuned,
    else ``base``. Chat-template use: an explicit ``use_chat_template`` applies to the
    application variant (capture and steering read it); otherwise, and for the extraction
    variant, the original's name heuristic decides.
    """
    if data is None:
        return VariantTable(schema="none")
    if not isinstance(data, dict):
        raise PipelineError("config.json is not a JSON object")
    explicit_chat = data.get("use_chat_template")
    explicit_chat = explicit_chat if isinstance(explicit_chat, bool) else None
    system_prompt = data.get("system_prompt") if isinstance(data.get("system_prompt"), str) else None

    if isinstance(data.get("model_variants"), dict):
        mv, defaults = data["model_variants"], data.get("defaults") or {}
        if not mv:
            raise PipelineError("config.json has an empty 'model_variants' table")
        first = next(iter(mv))
        table = VariantTable(
            schema="intermediate", extraction=str(defaults.get("extraction") or first),
            application=str(defaults.get("application") or first), system_prompt=system_prompt,
        )
        for name, entry in mv.items():
            if not isinstance(entry, dict) or not entry.get("model"):
                raise PipelineError(f"config.json model_variants.{name} has no 'model'")
            chat = entry.get("use_chat_template")
            if not isinstance(chat, bool):
                chat = explicit_chat if (explicit_chat is not None and name == table.application) \
                    else looks_instruct(entry["model"])
            table.variants[str(name)] = _variant(entry["model"], entry.get("lora"), chat)
        if "defaults" not in data:
            table.notes.append(f"config.json has no 'defaults': both stages default to the first variant {first!r}")
        table.check()
        return table

    ext = data.get("extraction_model") or data.get("model")
    app = data.get("application_model") or data.get("model") or ext
    ext = ext or app
    if not ext:
        raise PipelineError(
            "config.json names no model: expected extraction_model/application_model (old schema), "
            "model (legacy) or defaults + model_variants"
        )
    table = VariantTable(schema="old", system_prompt=system_prompt)
    app_chat = explicit_chat if explicit_chat is not None else looks_instruct(app)
    if ext == app:
        name = "instruct" if looks_instruct(ext) else "base"
        table.variants[name] = _variant(ext, None, app_chat)
        table.extraction = table.application = name
        table.notes.append(f"one model ({ext}) for both stages: a single variant {name!r}")
    else:
        table.variants["base"] = _variant(ext, None, looks_instruct(ext))
        table.variants["instruct"] = _variant(app, None, app_chat)
        table.extraction, table.application = "base", "instruct"
    if explicit_chat is None:
        table.notes.append("use_chat_template not set in config.json: chosen from the model names")
    table.check()
    return table


# torch pickles --------------------------------------------------------------------------
def load_pt(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU; anything else is refused in one line."""
    try:
        try:  # mmap: checking a large capture need not read all of it
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc).lower() and "zip" not in str(exc).lower():
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError,
            ImportError, TypeError) as exc:
        first = one_line(str(exc).split("\n")[0])[:200]
        raise PipelineError(
            f"{path}: not a plain tensor file; torch.load(weights_only=True) refused it ({first})"
        ) from None


def _describe(obj: Any) -> str:
    return type(obj).__name__ if not isinstance(obj, torch.Tensor) else f"tensor{tuple(obj.shape)}"


def read_vector_pt(path: Path) -> torch.Tensor:
    """A ``layer{L}.pt`` vector: must hold one 1-D tensor."""
    obj = load_pt(path)
    if not isinstance(obj, torch.Tensor):
        raise PipelineError(f"{path}: expected a 1-D tensor (a trait vector), found {_describe(obj)}")
    if obj.ndim != 1:
        raise PipelineError(f"{path}: expected a 1-D tensor (a trait vector), found {_describe(obj)}")
    return obj


def read_activations_pt(path: Path) -> torch.Tensor:
    """A ``{train,val}_all_layers.pt``: one ``[n, n_layers, d]`` tensor."""
    obj = load_pt(path)
    if not isinstance(obj, torch.Tensor) or obj.ndim != 3:
        raise PipelineError(
            f"{path}: expected one [n_examples, n_layers, hidden] tensor, found {_describe(obj)}"
        )
    return obj


def split_rows(meta: dict, split: str, n_rows: int) -> tuple[int, int] | str:
    """``(n_pos, n_neg)`` of an old activations tensor from its metadata.json, or why not.

    The original wrote positives first and took the boundary from the metadata counts;
    ``n_examples_*`` counted the train split (some versions counted train + val).
    """
    def ints(*keys):
        vals = [meta.get(k) for k in keys]
        return vals if all(isinstance(v, int) and not isinstance(v, bool) for v in vals) else None

    if split == "val":
        c = ints("n_val_pos", "n_val_neg")
        if c and sum(c) == n_rows:
            return c[0], c[1]
        return f"metadata n_val_pos + n_val_neg does not match the {n_rows} rows of the val tensor"
    c = ints("n_examples_pos", "n_examples_neg")
    if c and sum(c) == n_rows:
        return c[0], c[1]
    v = ints("n_val_pos", "n_val_neg")
    if c and v and (c[0] - v[0]) + (c[1] - v[1]) == n_rows:
        return c[0] - v[0], c[1] - v[1]
    return (f"metadata n_examples_pos + n_examples_neg does not match the {n_rows} rows of the "
            "train tensor, so the positive/negative boundary is unknown")


@dataclass
class RawCapture:
    """An old raw capture, restacked: ``{"prompt.residual": [n_tok, n_layers, d], ...}``."""

    tensors: dict[str, torch.Tensor]
    metadata: dict
    dropped: list[str]  # keys with no place in the new file (the original .pt keeps them)


def read_raw_pt(path: Path) -> RawCapture | str:
    """An old ``raw/residual/{set}/{id}.pt`` as new tensors, or a reason it cannot be stacked.

    Refuses (PipelineError) a file that is not the expected dict; returns a string for a
    well-formed file whose layers cannot be stacked (e.g. the internals mode's empty layers).
    """
    obj = load_pt(path)
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), dict) for k in ("prompt", "response")):
        raise PipelineError(
            f"{path}: expected a raw capture {{'prompt': {{...}}, 'response': {{...}}}}, found {_describe(obj)}"
        )
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {}
    dropped: list[str] = []
    for phase in ("prompt", "response"):
        part = obj[phase]
        for key in ("text", "tokens", "token_ids"):
            if key in part:
                meta[f"{phase}_{key}"] = part[key]
        acts = part.get("activations")
        if not isinstance(acts, dict) or not acts:
            return f"{phase} has no per-layer activations"
        try:
            layers = sorted(int(k) for k in acts)
        except (TypeError, ValueError):
            return f"{phase} activations are not keyed by layer number"
        if layers != list(range(len(layers))):
            return f"{phase} layers are not 0..{len(layers) - 1}"
        by_int = {int(k): v for k, v in acts.items()}
        comps = sorted({c for v in by_int.values() if isinstance(v, dict) for c in v})
        for comp in comps:
            rows = [by_int[la].get(comp) if isinstance(by_int[la], dict) else None for la in layers]
            if not all(isinstance(r, torch.Tensor) and r.ndim == 2 for r in rows):
                return f"{phase} component {comp!r} is not a [n_tokens, hidden] tensor at every layer"
            if len({tuple(r.shape) for r in rows}) != 1:
                return (f"{phase} component {comp!r} has different shapes across layers "
                        "(a layer-internals capture keeps only the requested layers)")
            tensors[f"{phase}.{comp}"] = torch.stack(rows, dim=1).contiguous()
        dropped += [f"{phase}.{k}" for k in part
                    if k not in ("text", "tokens", "token_ids", "activations") and part[k] not in ({}, [], None)]
    dropped += [k for k in obj if k not in ("prompt", "response")]
    if not tensors:
        return "no activation tensors"
    n_ids = len(meta.get("response_token_ids") or [])
    n_rows = next((t.shape[0] for k, t in tensors.items() if k.startswith("response.")), 0)
    if n_ids and n_rows == n_ids - 1:
        meta["response_rows_note"] = (
            "one row fewer than response tokens: the original never fed the last generated token back"
        )
    return RawCapture(tensors=tensors, metadata=meta, dropped=dropped)
