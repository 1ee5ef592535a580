"""What ``--help`` prints for a stage, read from the stage's own YAML.

One source of truth: the comment at the end of each key's line in ``conf/<stage>.yaml`` is
that key's meaning, the file's opening comment is the stage's description and examples.
Help shows them with the defaults *composed* for the command line at hand (so
``experiment=rm_syco --help`` shows that experiment's variants and models), and the docs'
key tables are generated from the same comments (``python -m trait_pipeline.help
--write-docs``; a test fails when they differ).

>>> doc = stage_doc("steer")                      # doctest: +SKIP
>>> [k.key for k in doc.keys][:3]                 # doctest: +SKIP
['experiment', 'model_variant', 'judge']
>>> print(format_help("steer", ["model_variant=rm_lora"]))   # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..layout import CONF_DIR
from ..layout import PROJECT_ROOT as REPO_ROOT

STAGES = ("extract", "steer", "infer", "compare")
# config groups in a stage's defaults list that are not the user's to pick on the line
_HIDDEN_GROUPS = ("_self_", "hydra", "local")
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?P<rest>.*)$")
_GROUP_LINE = re.compile(r"^\s*-\s*(?:optional\s+)?(?P<group>[\w/]+)\s*:\s*(?P<rest>.*)$")
_EXAMPLE = re.compile(r"^#\s+(?P<cmd>python -m \S+.*?)(?:\s+#\s*(?P<why>.*))?$")
COMPUTED = "(set per job)"


@dataclass(frozen=True)
class KeyDoc:
    """One user-facing key: dotted name, default as written in the YAML, and meaning."""

    key: str
    default: str
    meaning: str
    group: bool = False  # a config group: its value names a file of conf/<group>/


@dataclass(frozen=True)
class StageDoc:
    """The stage's description, examples and keys, parsed from ``conf/<stage>.yaml``."""

    stage: str
    module: str
    summary: str
    notes: list[str]
    examples: list[tuple[str, str]]  # (command, why)
    keys: list[KeyDoc] = field(default_factory=list)

    @property
    def doc_page(self) -> str:
        page = Path("docs") / f"{self.stage}.md"
        return page.as_posix() if (REPO_ROOT / page).is_file() else "README.md"


def _split_comment(rest: str) -> tuple[str, str]:
    """``value   # meaning`` -> (value, meaning); a ``#`` inside quotes is kept."""
    quote = None
    for i, ch in enumerate(rest):
        if ch in "'\"":
            quote = None if quote == ch else (quote or ch)
        elif ch == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), ""


def stage_doc(stage: str, conf_dir: Path = CONF_DIR) -> StageDoc:
    """Parse ``conf/<stage>.yaml``: opening comment, defaults groups, keys and their comments."""
    lines = (Path(conf_dir) / f"{stage}.yaml").read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    first = header[0].lstrip("# ") if header else stage
    summary = first.split(" — ", 1)[1] if " — " in first else first
    examples, notes = [], []
    for line in header[1:]:
        m = _EXAMPLE.match(line)
        if m:
            examples.append((m["cmd"].strip(), (m["why"] or "").strip()))
        else:
            notes.append(line.lstrip("#").strip())
    keys: list[KeyDoc] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    in_defaults = False
    pending: list[tuple[int, str, str, str]] = []
    for line in lines[len(header):]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if in_defaults:
            if line.lstrip().startswith("-"):
                g = _GROUP_LINE.match(line)
                if g and g["group"] not in _HIDDEN_GROUPS:
                    value, meaning = _split_comment(g["rest"])
                    keys.append(KeyDoc(g["group"], value, meaning, group=True))
                continue
            in_defaults = False
        m = _KEY_LINE.match(line)
        if not m:
            continue
        indent, key = len(m["indent"]), m["key"]
        if key == "defaults" and indent == 0:
            in_defaults = True
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        value, meaning = _split_comment(m["rest"])
        pending.append((indent, dotted, value, meaning))
        if value == "":
            stack.append((indent, key))
    # a key whose value is empty and that has children is a mapping, not a key of its own
    for i, (indent, dotted, value, meaning) in enumerate(pending):
        has_children = i + 1 < len(pending) and pending[i + 1][1].startswith(dotted + ".")
        if dotted == "stage" or (value == "" and has_children):
            continue
        keys.append(KeyDoc(dotted, value, meaning))
    return StageDoc(stage=stage, module=f"trait_pipeline.{stage}", summary=summary,
                    notes=notes, examples=examples, keys=keys)


# ------------------------------------------------------------------------------------------
# defaults, composed for the command line at hand
# ------------------------------------------------------------------------------------------
def _compose(stage: str, overrides: list[str]) -> Any | None:
    """The stage's config with these overrides, or None when it cannot be composed."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .. import resolvers

    resolvers.register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=stage, overrides=overrides)
    except Exception:  # noqa: BLE001 -- help must print whatever the line says; the run reports the error
        return None
    finally:
        GlobalHydra.instance().clear()


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def resolved_default(cfg: Any, kd: KeyDoc) -> str:
    """The key's value in the composed config, shown plainly; never an unresolved ``${...}``."""
    from omegaconf import OmegaConf

    if kd.group:
        if cfg is not None and kd.key == "model_variant":
            return str(OmegaConf.select(cfg, "model_variant.name", default=kd.default))
        if cfg is not None and kd.key == "experiment":
            return str(OmegaConf.select(cfg, "experiment", default=kd.default))
        return kd.default
    if cfg is not None:
        try:
            if OmegaConf.is_missing(cfg, kd.key):
                return "???"
            node = OmegaConf.select(cfg, kd.key, throw_on_resolution_failure=True)
            value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
            return _fmt(value)
        except Exception:  # noqa: BLE001 -- e.g. output_dir needs trait=, which is still ???
            return COMPUTED
    return COMPUTED if "${" in kd.default else kd.default


def _variants(cfg: Any) -> list[str]:
    from omegaconf import OmegaConf

    if cfg is None or "variants" not in cfg:
        return []
    table = OmegaConf.to_container(cfg.variants, resolve=True)
    defaults = OmegaConf.to_container(cfg.get("stage_defaults") or {}, resolve=True)
    roles: dict[str, list[str]] = {}
    for role, name in defaults.items():
        roles.setdefault(str(name), []).append(f"{role} default")
    width = max(len(n) for n in table) if table else 8
    out = []
    for name, spec in table.items():
        spec = spec or {}
        what = str(spec.get("model"))
        if spec.get("lora"):
            what += f" + LoRA {spec['lora']}"
        role = f"  ({', '.join(roles[name])})" if name in roles else ""
        out.append(f"  {name:<{width}}  {what}{role}")
    aliases = ", ".join(f"{role} = {name}" for role, name in defaults.items())
    if aliases:
        out.append(f"  (model_variant=extraction|application: the stage default of that role; {aliases})")
    return out


def format_help(stage: str, overrides: list[str] | None = None) -> str:
    """The text of ``trait-pipeline <stage> --help`` for this command line's overrides."""
    doc = stage_doc(stage)
    cfg = _compose(stage, list(overrides or []))
    lines = [f"trait-pipeline {stage} — {doc.summary}", "",
             f"usage: trait-pipeline {stage} [key=value ...] [-m key=a,b ...]",
             f"       python -m {doc.module} [key=value ...]", ""]
    if doc.notes:
        lines += [n for n in doc.notes if n] + [""]
    lines.append("examples:")
    width = max((len(c) for c, _ in doc.examples), default=0)
    for cmd, why in doc.examples:
        cmd = cmd.replace(f"python -m {doc.module}", f"trait-pipeline {stage}")
        lines.append(f"  {cmd:<{width}}" + (f"  # {why}" if why else ""))
    lines += ["", "keys (key=value on the command line; -m key=a,b sweeps):"]
    shown = [(kd, resolved_default(cfg, kd)) for kd in doc.keys]
    kw = max(len(kd.key) for kd, _ in shown)
    dw = min(28, max(len(d) for _, d in shown))
    for kd, default in shown:
        meaning = kd.meaning
        # the files of conf/<group>/ are its options: listed, never out of date (variants are
        # listed below, with their models: they come from the experiment's table)
        if kd.group and kd.key != "model_variant":
            opts = sorted(p.stem for p in (CONF_DIR / kd.key).glob("*.yaml"))
            meaning += f" [{' | '.join(opts)}]" if opts else ""
        lines.append(f"  {kd.key:<{kw}}  {default:<{dw}}  {meaning}")
    variants = _variants(cfg)
    if variants:
        exp = cfg.get("experiment") if cfg is not None else "?"
        lines += ["", f"model variants of experiment {exp!r} (model_variant=NAME):", *variants]
    lines += ["", f"docs: {doc.doc_page}",
              "also: --cfg job (the resolved config, nothing runs), --hydra-help (Hydra's own help)"]
    return "\n".join(lines)


def keys_markdown(stage: str) -> str:
    """The docs' key table: the same comments and defaults as ``--help`` (demo experiment)."""
    doc = stage_doc(stage)
    cfg = _compose(stage, [])
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for kd in doc.keys:
        # a path depends on the machine (and its environment): docs say where it comes from
        default = COMPUTED if kd.key == "output_dir" else resolved_default(cfg, kd)
        default = default.replace("|", "\\|")
        rows.append(f"| `{kd.key}` | `{default}` | {kd.meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


def _markers(stage: str) -> tuple[str, str]:
    begin = (f"<!-- keys: {stage} (generated from conf/{stage}.yaml: "
             "python -m trait_pipeline.help --write-docs) -->")
    return begin, f"<!-- keys: {stage} end -->"


def docs_in_sync(path: Path, stage: str) -> bool | None:
    """Whether ``path``'s generated key table of ``stage`` is current; None: it has none."""
    begin, end = _markers(stage)
    text = Path(path).read_text()
    if begin not in text:
        return None
    body = text.split(begin, 1)[1].split(end, 1)[0]
    return body.strip() == keys_markdown(stage).strip()


def write_docs(paths: list[Path]) -> list[Path]:
    """Regenerate every marked key table in ``paths``; return the files that changed."""
    changed = []
    for path in paths:
        text = Path(path).read_text()
        new = text
        for stage in STAGES:
            begin, end = _markers(stage)
            while begin in new and end in new.split(begin, 1)[1]:
                head, tail = new.split(begin, 1)
                _, after = tail.split(end, 1)
                new = head + "\x00" + after
                new = new.replace("\x00", f"{begin}\n{keys_markdown(stage)}\n{end}", 1)
                break
        if new != text:
            Path(path).write_text(new)
            changed.append(Path(path))
    return changed
