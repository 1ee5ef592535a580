"""``trait-pipeline diff --rev REV``: what a config change does to every stage x variant.

A pull request that edits a preset shows YAML lines; a reviewer needs what each job will now
run with. For each experiment preset that changed between git revision ``REV`` and the
working tree (every preset when another conf file changed: a stage file, a variant file),
this composes every stage x variant at both, resolves them, and prints only the differences
in what the job runs with (the preset's ``variants`` / ``stage_defaults`` tables show through
their effect: ``model_variant.*``, ``vectors.model_variant``).
Identical differences are printed once, naming every (stage, variant) they apply to.
``(default)`` is the variant a stage picks when none is given (``stage_defaults``).

    $ trait-pipeline diff --rev HEAD~1
    $ trait-pipeline diff --rev main experiment=rm_syco --stage steer
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError
from .compose import STAGES, compose, hydra_conf, resolve
from .diff import MISSING, Row, Side, _Paint, compare, format_rows

DEFAULT = "(default)"
# the preset's own tables: inputs to resolution, shown through their effect (model_variant.*,
# vectors.model_variant), so one variant's change does not mark every job as changed
TABLE_KEYS = ("variants.", "stage_defaults.")
REVIEW_STAGES = ("extract", "steer", "infer")


def _git(repo: Path, *args: str, binary: bool = False) -> str | bytes:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60,
                             check=False, text=not binary)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PipelineError(f"cannot run git: {exc}") from None
    if out.returncode != 0:
        err = out.stderr if isinstance(out.stderr, str) else out.stderr.decode(errors="replace")
        raise PipelineError(f"git {' '.join(args[:2])} failed: {' '.join(err.split())[:300]}")
    return out.stdout


@dataclass
class Change:
    """The conf files that differ between REV and the working tree, and the presets to review."""

    files: list[str]
    experiments: list[str]


def conf_at(repo: Path, rev: str, rel: str, dest: Path) -> Path:
    """Extract ``rel`` (the conf dir) as it was at ``rev`` into ``dest``; returns its path."""
    data = _git(repo, "archive", "--format=tar", rev, "--", rel, binary=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest / rel


def _presets(conf: Path) -> set[str]:
    return {p.stem for p in (conf / "experiment").glob("*.yaml")} if (conf / "experiment").is_dir() else set()


def _variants(cfg) -> list[str]:
    return sorted((cfg.get("variants") or {}).keys())


def _compose_all(conf: Path, experiment: str, stages: list[str], variants: list[str] | None
                 ) -> tuple[dict[tuple[str, str], dict], list[str]]:
    """``{(stage, variant): resolved config}`` of one experiment in one conf dir."""
    out: dict[tuple[str, str], dict] = {}
    with hydra_conf(conf):
        first = compose(stages[0], [f"experiment={experiment}"])
        names = _variants(first) if variants is None else variants
        for stage in stages:
            for v in [DEFAULT, *names]:
                ov = [f"experiment={experiment}"] + ([] if v == DEFAULT else [f"model_variant={v}"])
                try:
                    cfg = compose(stage, ov)
                except PipelineError:
                    continue  # the variant is not defined here: reported as added/removed
                plain, _ = resolve(cfg)
                plain.pop("hydra", None)
                out[(stage, v)] = plain
    return out, names


def changed(repo: Path, rev: str, rel: str, old: Path, new: Path) -> Change:
    files = [f for f in str(_git(repo, "diff", "--name-only", rev, "--", rel)).splitlines() if f]
    files += [f for f in str(_git(repo, "ls-files", "--others", "--exclude-standard", "--", rel)).splitlines()
              if f and f not in files]
    exp_prefix = f"{rel}/experiment/" if rel != "." else "experiment/"
    presets = {Path(f).stem for f in files if f.startswith(exp_prefix) and f.endswith(".yaml")}
    if any(not f.startswith(exp_prefix) for f in files):
        presets |= _presets(old) | _presets(new)  # a stage or variant file: every preset may change
    return Change(sorted(files), sorted(presets))


def review(rev: str, filters: list[str], *, stages: str | None = None, conf_dir: Path | None = None,
           as_json: bool = False, color: bool = False, show_all: bool = False) -> int:
    from ..layout import CONF_DIR

    conf = Path(conf_dir or CONF_DIR).resolve()
    if not conf.is_dir():
        raise PipelineError(f"no conf dir {conf}")
    wanted: set[str] | None = None
    for f in filters:
        key, _, value = f.partition("=")
        if key != "experiment" or not value:
            raise PipelineError(f"bad filter {f!r} for --rev: expected experiment=NAME[,NAME]")
        wanted = (wanted or set()) | set(value.split(","))
    stage_list = list(REVIEW_STAGES) if not stages else stages.split(",")
    bad = [s for s in stage_list if s not in STAGES]
    if bad:
        raise PipelineError(f"unknown stage {bad[0]!r}; expected one of: {', '.join(STAGES)}")
    top = Path(str(_git(conf, "rev-parse", "--show-toplevel")).strip())
    try:
        _git(top, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except PipelineError:
        raise PipelineError(f"unknown git revision {rev!r} in {top}; expected a commit, "
                            "branch or tag, e.g. HEAD~1 or main") from None
    rel = conf.relative_to(top.resolve()).as_posix()
    paint = _Paint(color)
    report: dict = {"schema_version": 1, "rev": rev, "conf": str(conf), "files": [], "experiments": {}}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tp-rev-") as tmp:
        old_conf = conf_at(top, rev, rel, Path(tmp))
        change = changed(top, rev, rel, old_conf, conf)
        report["files"] = change.files
        todo = [e for e in change.experiments if wanted is None or e in wanted]
        if wanted:
            unknown = sorted(wanted - (_presets(old_conf) | _presets(conf)))
            if unknown:
                raise PipelineError(f"unknown experiment {unknown[0]!r}; presets: "
                                    f"{', '.join(sorted(_presets(old_conf) | _presets(conf)))}")
        lines.append(paint(f"diff --rev {rev}: {len(change.files)} conf file(s) changed "
                           f"({rev} -> working tree): {', '.join(change.files) or 'none'}", "1"))
        any_diff = False
        for exp in todo:
            at_old, at_new = exp in _presets(old_conf), exp in _presets(conf)
            lines.append(paint(f"=== experiment {exp}", "1;36")
                         + ("" if at_old and at_new else " (new preset)" if at_new else " (preset removed)"))
            olds, old_names = _compose_all(old_conf, exp, stage_list, None) if at_old else ({}, [])
            news, new_names = _compose_all(conf, exp, stage_list, None) if at_new else ({}, [])
            groups: dict[str, tuple[list[Row], list[str]]] = {}
            unchanged: list[str] = []
            for stage in stage_list:
                for v in [DEFAULT, *sorted(set(old_names) | set(new_names))]:
                    a, b = olds.get((stage, v)), news.get((stage, v))
                    where = f"{stage} x {v}"
                    if a is None and b is None:
                        continue
                    if a is None or b is None:  # variant added or removed: say what it loads
                        present = a or b
                        sub = {"model_variant": present.get("model_variant")}
                        sa, sb = (Side(rev, {}, {}), Side("now", sub, {})) if a is None else \
                            (Side(rev, sub, {}), Side("now", {}, {}))
                    else:
                        sa, sb = Side(rev, a, {}), Side("now", b, {})
                    rows = [r for r in compare(sa, sb, show_all=show_all).config
                            if not r.key.startswith(TABLE_KEYS)]
                    if not rows:
                        unchanged.append(where)
                        continue
                    sig = json.dumps([[r.key, _j(r.a), _j(r.b)] for r in rows], default=str)
                    groups.setdefault(sig, (rows, []))[1].append(where)
            for rows, wheres in groups.values():
                any_diff = True
                lines.append(paint(f"--- {', '.join(wheres)}", "1"))
                lines += format_rows(rows, paint)
            if unchanged:
                lines.append(paint(f"(unchanged: {', '.join(unchanged)})", "2"))
            if not groups and not unchanged:
                lines.append("(nothing composes)")
            report["experiments"][exp] = {
                "changes": [{"where": w, "rows": [r.to_json() for r in rows]} for rows, w in groups.values()],
                "unchanged": unchanged}
        if not todo:
            lines.append("(no experiment preset affected)" if wanted is None
                         else "(no change to the selected experiments)")
    if as_json:
        report["same"] = not any_diff if todo else True
        print(json.dumps(report, indent=2, default=str))
    else:
        print("\n".join(lines))
    return 1 if todo and any_diff else 0


def _j(v):
    return "<absent>" if v is MISSING else v


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: trait-pipeline diff --rev REV")
