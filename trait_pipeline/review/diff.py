"""``trait-pipeline diff A B``: what two runs (or two compositions) ran with, side by side.

A and B may be:

* a run folder, ``.../runs/<id>/`` (its resolved snapshot ``.hydra/resolved.yaml``);
* a steering run entry, ``.../results.json#<run key>`` (its job's snapshot, plus the entry's
  own settings: layers, coefficients, method, generation, judge);
* a job of a sweep, ``<sweep dir>#<job number>``;
* two compositions, after the stage: ``diff steer -- experiment=rm_syco model_variant=instruct
  -- experiment=rm_syco model_variant=rm_lora`` (composed and resolved now).

It prints one ``-``/``+`` pair per differing key of the resolved configs (keys sorted,
dotted), then provenance differences in their own section. Noise is hidden unless ``--all``:
timestamps, run ids, and paths that differ only by the variant name or the run id.
Exit status like ``diff``: 0 same, 1 different, 2 bad input. ``--json`` for tools.

>>> a = {"config": {"model_variant": {"name": "instruct", "lora": None},
...                 "output_dir": "/x/instruct"}, "provenance": {}}
>>> b = {"config": {"model_variant": {"name": "rm_lora", "lora": "demo:rm_lora"},
...                 "output_dir": "/x/rm_lora"}, "provenance": {}}
>>> d = compare(Side("A", a["config"], {}), Side("B", b["config"], {}))
>>> [(r.key, r.a, r.b) for r in d.config]
[('model_variant.lora', None, 'demo:rm_lora'), ('model_variant.name', 'instruct', 'rm_lora')]
>>> [r.key for r in d.hidden]
['output_dir']
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PipelineError, one_line
from . import snapshot as snapshot_mod

MISSING = object()
NOISE_KEYS = re.compile(r"(^|\.)(timestamp|run_id|started|ended|created|capture_date|projection_date)$")
DERIVED_KEYS = re.compile(r"(^|\.)baseline_key$")
RUN_ID = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(_[0-9a-f]{4})?(_job\d+)?")


@dataclass
class Side:
    """One operand: a label, its resolved config, its provenance, and what identifies it."""

    label: str
    config: dict
    provenance: dict
    entry: dict = field(default_factory=dict)  # a results.json run entry's own settings
    overrides: list[str] = field(default_factory=list)
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def variant(self) -> str | None:
        mv = self.config.get("model_variant")
        return mv.get("name") if isinstance(mv, dict) else None


@dataclass
class Row:
    key: str
    a: Any
    b: Any
    why: str | None = None  # for hidden rows: why it is noise

    def to_json(self) -> dict:
        out = {"key": self.key}
        if self.a is not MISSING:
            out["a"] = self.a
        if self.b is not MISSING:
            out["b"] = self.b
        if self.why:
            out["hidden_because"] = self.why
        return out


@dataclass
class Diff:
    a: Side
    b: Side
    config: list[Row]
    provenance: list[Row]
    hidden: list[Row]

    @property
    def same(self) -> bool:
        return not self.config and not self.provenance

    def to_json(self) -> dict:
        return {"schema_version": 1, "same": self.same,
                "a": {"label": self.a.label, "overrides": self.a.overrides},
                "b": {"label": self.b.label, "overrides": self.b.overrides},
                "config": [r.to_json() for r in self.config],
                "provenance": [r.to_json() for r in self.provenance],
                "hidden": [r.to_json() for r in self.hidden],
                "notes": self.a.notes + self.b.notes}


# --- flattening and comparing --------------------------------------------------------------
def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists of scalars stay whole, lists of dicts get ``[i]``.

    >>> flatten({"a": {"b": 1, "c": [1, 2]}, "v": [{"layer": 3}]})
    {'a.b': 1, 'a.c': [1, 2], 'v[0].layer': 3}
    """
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        if not obj and prefix:
            out[prefix] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and any(isinstance(x, (dict, list)) for x in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


def _noise(key: str, va: Any, vb: Any, a: Side, b: Side) -> str | None:
    if NOISE_KEYS.search(key):
        return "a timestamp or run id"
    if DERIVED_KEYS.search(key):
        return "a key hashed from the settings shown"
    if not (isinstance(va, str) and isinstance(vb, str)):
        return None
    ra, rb = RUN_ID.sub("<run>", va), RUN_ID.sub("<run>", vb)
    if ra == rb:
        return "differs only by the run id"
    if a.variant and b.variant and a.variant != b.variant and ("/" in va or "\\" in va):
        pat = re.compile(rf"(?<![\w-]){re.escape(a.variant)}(?![\w-])")
        if pat.sub(b.variant, ra) == rb:
            return "a path that only carries the variant"
    return None


def _rows(fa: dict, fb: dict, a: Side, b: Side, show_all: bool) -> tuple[list[Row], list[Row]]:
    shown, hidden = [], []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, MISSING), fb.get(key, MISSING)
        if va == vb and (va is MISSING) == (vb is MISSING):
            continue
        why = None if MISSING in (va, vb) else _noise(key, va, vb, a, b)
        if why and not show_all:
            hidden.append(Row(key, va, vb, why))
        else:
            shown.append(Row(key, va, vb))
    return shown, hidden


def compare(a: Side, b: Side, show_all: bool = False) -> Diff:
    """The differences between two operands (see the module docstring)."""
    fa = flatten(a.config)
    fb = flatten(b.config)
    if a.entry or b.entry:
        fa.update(flatten({"entry": a.entry}))
        fb.update(flatten({"entry": b.entry}))
    cfg_rows, hid1 = _rows(fa, fb, a, b, show_all)
    prov_rows, hid2 = _rows(flatten(a.provenance, "provenance"), flatten(b.provenance, "provenance"),
                            a, b, show_all)
    return Diff(a, b, cfg_rows, prov_rows, hid1 + hid2)


# --- operands ----------------------------------------------------------------------------------
def _from_snapshot(label: str, path: Path, run_dir: Path | None = None) -> Side:
    snap = snapshot_mod.read(path)
    return Side(label, snap.get("config") or {}, snap.get("provenance") or {},
                overrides=list(snap.get("overrides") or []), run_id=snap.get("run_id"))


def _legacy(label: str, hydra_config: Path) -> Side:
    """A run from before snapshots: resolve its ``.hydra/config.yaml`` now, and say so."""
    from omegaconf import OmegaConf

    from .. import resolvers
    from .compose import resolve

    resolvers.register()
    cfg = OmegaConf.load(hydra_config)
    plain, _ = resolve(cfg)
    overrides_file = hydra_config.parent / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    return Side(label, plain, {}, overrides=[str(o) for o in overrides],
                notes=[(f"{label} has no resolved snapshot (made before snapshots existed): its "
                       ".hydra/config.yaml was resolved against today's presets and environment")])


def run_folder(path: Path, label: str | None = None) -> Side:
    """A run folder ``runs/<id>/`` (or the snapshot file itself)."""
    path = Path(path)
    label = label or str(path)
    if path.is_file():
        if path.name == "config.yaml":
            resolved = path.parent / snapshot_mod.SNAPSHOT_NAME
            return _from_snapshot(label, resolved) if resolved.is_file() else _legacy(label, path)
        return _from_snapshot(label, path)
    if not path.is_dir():
        raise PipelineError(f"no run folder {path}: expected runs/<id>/, results.json#<key>, "
                            "<sweep dir>#<job> or two compositions after --")
    snap = snapshot_mod.snapshot_path(path)
    if snap.is_file():
        return _from_snapshot(label, snap)
    if (path / ".hydra" / "config.yaml").is_file():
        return _legacy(label, path / ".hydra" / "config.yaml")
    runs = sorted(p for p in (path / "runs").glob("*") if p.is_dir()) if (path / "runs").is_dir() else []
    if runs:
        shown = ", ".join(p.name for p in runs[-5:])
        raise PipelineError(f"{path} holds {len(runs)} runs, not one; name one: "
                            f"{path}/runs/<id> (latest: {shown})")
    raise PipelineError(f"{path} is not a run folder: no .hydra/ snapshot in it")


_ENTRY_KEYS = ("config", "generation", "judge", "questions", "vector_source", "model_variant",
               "prompt_set", "baseline_key")


def results_entry(path: Path, key: str) -> Side:
    """``results.json#<run key>``: the entry's job snapshot plus the entry's own settings."""
    from ..jsonio import read_json

    data = read_json(path)
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list):
        raise PipelineError(f"{path} is not a steering results file (no 'runs' list)")
    entry = next((r for r in runs if str(r.get("key")) == key), None)
    if entry is None:
        keys = [str(r.get("key")) for r in runs][:8]
        raise PipelineError(f"no run {key!r} in {path}; its runs: {', '.join(keys) or '(none)'}"
                            + (" ..." if len(runs) > 8 else ""))
    label = f"{path}#{key}"
    link = entry.get("snapshot")
    if link and (path.parent / link).is_file():
        side = _from_snapshot(label, path.parent / link)
    elif entry.get("composed_config") and (path.parent / entry["composed_config"]).is_file():
        side = run_folder(path.parent / entry["composed_config"], label)
    else:
        raise PipelineError(f"run {key!r} of {path} links to no config snapshot "
                            f"(snapshot: {link!r}, composed_config: {entry.get('composed_config')!r})")
    side.entry = {k: entry[k] for k in _ENTRY_KEYS if k in entry}
    return side


def sweep_job(sweep_dir: Path, num: str) -> Side:
    """``<sweep dir>#<n>``: the run folder of job n, from the sweep's ``jobs/<n>.json``."""
    from ..jsonio import read_json

    if not re.fullmatch(r"\d+", num):
        raise PipelineError(f"bad job number {num!r} in {sweep_dir}#{num}: expected an integer")
    jobs = sweep_dir / "jobs"
    f = jobs / f"{int(num)}.json"
    if not f.is_file():
        have = sorted(int(p.stem) for p in jobs.glob("*.json") if p.stem.isdigit()) if jobs.is_dir() else []
        raise PipelineError(f"no job #{num} in sweep {sweep_dir}; jobs: "
                            f"{', '.join(map(str, have)) or '(none: not a sweep folder?)'}")
    out = read_json(f).get("output_dir")
    if not out:
        raise PipelineError(f"job #{num} of {sweep_dir} never started (no output folder recorded)")
    return run_folder(Path(out), f"{sweep_dir}#{num}")


def operand(text: str) -> Side:
    """Any of the single-path operand forms (see the module docstring)."""
    if "#" in text:
        base, frag = text.rsplit("#", 1)
        p = Path(base)
        if p.is_file():
            return results_entry(p, frag)
        if p.is_dir() and (p / "results.json").is_file() and not (p / "jobs").is_dir():
            return results_entry(p / "results.json", frag)
        if p.is_dir():
            return sweep_job(p, frag)
        raise PipelineError(f"no such file or folder {base!r} in operand {text!r}")
    return run_folder(Path(text))


def compositions(stage: str, a: list[str], b: list[str], conf_dir: Path | None = None) -> tuple[Side, Side]:
    from .compose import composed

    sides = []
    for ov in (a, b):
        plain, notes = composed(stage, ov, conf_dir)
        label = f"{stage} {' '.join(ov)}".strip()
        sides.append(Side(label, plain, {}, overrides=list(ov),
                          notes=[f"{label}: {n}" for n in notes]))
    return sides[0], sides[1]


# --- output --------------------------------------------------------------------------------------
def _value(v: Any) -> str:
    if v is MISSING:
        return "(absent)"
    if isinstance(v, str):
        return v if v and v.strip() == v and v not in ("null", "true", "false") else json.dumps(v)
    return json.dumps(v, ensure_ascii=False)


class _Paint:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text


def format_rows(rows: list[Row], paint: _Paint) -> list[str]:
    lines = []
    for r in rows:
        if r.a is not MISSING:
            lines.append(paint(f"-{r.key}: {_value(r.a)}", "31"))
        if r.b is not MISSING:
            lines.append(paint(f"+{r.key}: {_value(r.b)}", "32"))
    return lines


def format_diff(d: Diff, color: bool = False) -> str:
    paint = _Paint(color)
    out = [paint(f"--- {d.a.label}", "1"), paint(f"+++ {d.b.label}", "1")]
    for side, sign in ((d.a, "-"), (d.b, "+")):
        if side.overrides:
            out.append(paint(f"# {sign} overrides: {' '.join(side.overrides)}", "2"))
    if d.config:
        out.append(paint("@@ config @@", "36"))
        out += format_rows(d.config, paint)
    if d.provenance:
        out.append(paint("@@ provenance @@", "36"))
        out += format_rows(d.provenance, paint)
    if d.same:
        out.append("(same resolved config and provenance)")
    if d.hidden:
        whys = sorted({r.why for r in d.hidden if r.why})
        out.append(paint(f"({len(d.hidden)} more differences hidden: {'; '.join(whys)}; --all shows them)", "2"))
    return "\n".join(out)


def _want_color(choice: str) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


# --- command line --------------------------------------------------------------------------------
USAGE = """\
trait-pipeline diff A B [--all] [--json] [--color auto|always|never]
trait-pipeline diff STAGE -- OVERRIDES... -- OVERRIDES...
trait-pipeline diff --rev REV [experiment=NAME ...] [--stage STAGE] [--conf DIR]"""

EPILOG = """\
operands A, B:
  experiments/demo/steering/.../runs/<id>          a run folder
  experiments/demo/steering/.../results.json#<key>  a steering run entry
  experiments/demo/sweeps/steer/<time>#3            job 3 of a sweep
  steer -- experiment=rm_syco model_variant=instruct -- experiment=rm_syco model_variant=rm_lora
                                                    two compositions of a stage, resolved now
exit status: 0 same, 1 different, 2 bad input.
--rev REV: for every experiment preset changed since git revision REV (any conf/ change: all
presets), compose each stage x variant at REV and now, and print only what resolves differently."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trait-pipeline diff", usage=USAGE, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Compare what two runs or compositions ran with.")
    p.add_argument("operands", nargs="*", help="two operands, or STAGE before two compositions")
    p.add_argument("--all", action="store_true", help="also show timestamps, run ids, variant-only paths")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--color", "--colour", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--rev", metavar="REV", help="review mode: what changed since git revision REV")
    p.add_argument("--stage", help="the stage of two compositions, or the stages --rev composes")
    p.add_argument("--conf", type=Path, default=None, help="conf dir for --rev (default: the project's)")
    return p


_VALUE_OPTS = ("--color", "--colour", "--stage", "--conf", "--rev")


class _Usage(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    groups: list[list[str]] = []
    if "--" in argv:
        i = argv.index("--")
        head, rest = argv[:i], argv[i + 1:]
        if "--" not in rest:
            print("error: two compositions need two `--` groups: diff STAGE -- A... -- B...",
                  file=sys.stderr)
            return 2
        j = rest.index("--")
        groups = [rest[:j], rest[j + 1:]]
        if "--" in groups[1]:
            print("error: more than two `--` groups; diff compares two compositions", file=sys.stderr)
            return 2
        # options typed after the compositions (overrides never start with "-")
        moved: list[str] = []
        for g in groups:
            keep, k = [], 0
            while k < len(g):
                if g[k] in _VALUE_OPTS and k + 1 < len(g):
                    moved += g[k:k + 2]
                    k += 2
                    continue
                if g[k].startswith("-"):
                    moved.append(g[k])
                else:
                    keep.append(g[k])
                k += 1
            g[:] = keep
        argv = head + moved
    parser = _parser()
    parser.error = lambda msg: (_ for _ in ()).throw(_Usage(msg))  # one line, exit 2
    try:
        args = parser.parse_args(argv)
    except _Usage as exc:
        print(f"error: {exc}; usage: trait-pipeline diff A B (see --help)", file=sys.stderr)
        return 2
    try:
        if args.rev is not None:
            from .rev import review

            if groups:
                raise PipelineError("--rev takes experiment=NAME filters, not `--` compositions")
            return review(args.rev, args.operands, stages=args.stage, conf_dir=args.conf,
                          as_json=args.json, color=_want_color(args.color), show_all=args.all)
        if groups:
            stage = args.stage or (args.operands[0] if args.operands else None)
            if stage is None or len(args.operands) > (0 if args.stage else 1):
                raise PipelineError("name the stage before the compositions, e.g. "
                                    "diff steer -- model_variant=instruct -- model_variant=rm_lora")
            a, b = compositions(stage, groups[0], groups[1], args.conf)
        else:
            if len(args.operands) != 2:
                raise PipelineError(f"diff takes two operands, got {len(args.operands)}; usage: "
                                    "diff A B  or  diff STAGE -- A... -- B...")
            a, b = operand(args.operands[0]), operand(args.operands[1])
        d = compare(a, b, show_all=args.all)
    except PipelineError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(d.to_json(), indent=2, ensure_ascii=False, default=str))
    else:
        print(format_diff(d, _want_color(args.color)))
        for n in a.notes + b.notes:
            print(f"note: {n}", file=sys.stderr)
    return 0 if d.same else 1


if __name__ == "__main__":
    raise SystemExit(main())
