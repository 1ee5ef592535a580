"""Compose a stage's config the way a job would, and resolve it for a reader.

Used by ``--cfg`` (every stage), ``trait-pipeline diff -- overrides -- overrides`` and the
review mode ``diff --rev`` (which composes from an old revision's conf dir too). Resolution
is tolerant: a value nobody set yet prints as ``???`` and a broken interpolation keeps its
``${...}`` text, each with a note, instead of a traceback.

>>> from omegaconf import OmegaConf
>>> plain, notes = resolve(OmegaConf.create({"a": "???", "b": "${a}", "c": 1}))
>>> plain, notes
({'a': '???', 'b': '${a}', 'c': 1}, ['a is not set (???)', 'b: cannot resolve ${a}: a is not set'])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from ..errors import PipelineError, one_line

STAGES = ("extract", "steer", "infer", "compare")


@contextlib.contextmanager
def hydra_conf(conf_dir: Path | None = None) -> Iterator[None]:
    """Hydra's compose API initialised on ``conf_dir`` (default: the project's conf/)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .. import resolvers
    from ..layout import CONF_DIR

    global _OTHER_CONF
    resolvers.register()
    GlobalHydra.instance().clear()
    conf = Path(conf_dir or CONF_DIR).resolve()
    _OTHER_CONF = conf != CONF_DIR.resolve()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            yield
    finally:
        _OTHER_CONF = False
        GlobalHydra.instance().clear()


_OTHER_CONF = False  # composing from a conf dir other than the shipped one (diff --rev)


def _variant_source() -> list[str]:
    """The override that lets another conf dir answer ``model_variant=<name>`` from the
    experiment's ``variants`` table, as the shipped one does (our search-path plugin only
    extends the shipped conf dir's search path)."""
    try:
        from hydra_plugins.trait_pipeline_config import VARIANT_SCHEME
    except ImportError:
        return []
    return [f"hydra.searchpath=[{VARIANT_SCHEME}://]"]


def first_of_sweeps(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Sweep overrides (``layer=10,20``) replaced by their first value; also the sweeps seen."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise PipelineError(f"cannot parse the command line: {one_line(exc)}") from None
    out, sweeps = [], []
    for o in parsed:
        if o.is_sweep_override():
            first = next(iter(o.sweep_string_iterator()))
            out.append(f"{o.get_key_element()}={first}")
            sweeps.append(o.input_line)
        else:
            out.append(o.input_line)
    return out, sweeps


def compose(stage: str, overrides: list[str], *, with_hydra: bool = False) -> DictConfig:
    """One composition inside :func:`hydra_conf`; unknown names become a PipelineError."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException

    from ..cli import _missing_option_message

    if stage not in STAGES:
        raise PipelineError(f"unknown stage {stage!r}; expected one of: {', '.join(STAGES)}")
    extra = _variant_source() if _OTHER_CONF else []
    try:
        cfg = hydra_compose(config_name=stage, overrides=[*overrides, *extra], return_hydra_config=with_hydra)
    except HydraException as exc:
        raise PipelineError(_missing_option_message(exc)) from None
    if with_hydra:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(cfg)  # ${hydra:...} in the hydra node resolves
    return cfg


def resolve(cfg: DictConfig, node: str | None = None) -> tuple[Any, list[str]]:
    """``cfg`` (or the subtree ``node``) as plain data, resolved as far as it goes, plus notes."""
    notes: list[str] = []
    root = cfg

    def leaf(path: str, raw: Any) -> Any:
        if raw == "???":
            notes.append(f"{path} is not set (???)")
            return "???"
        if not (isinstance(raw, str) and "${" in raw):
            return raw
        try:
            val = OmegaConf.select(root, path, throw_on_missing=True)
            if isinstance(val, (DictConfig, ListConfig)):
                return OmegaConf.to_container(val, resolve=True)
            return val
        except MissingMandatoryValue as exc:
            key = str(exc).split("full_key:")[-1].split()[0] if "full_key:" in str(exc) else path
            notes.append(f"{path}: cannot resolve {raw}: {key} is not set")
        except OmegaConfBaseException as exc:
            first = one_line(str(exc).splitlines()[0])
            if "Missing mandatory value:" in first:
                first = f"{first.split('Missing mandatory value:')[-1].strip()} is not set"
            notes.append(f"{path}: cannot resolve {raw}: {first}")
        return raw

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(x)]
        return leaf(path, x)

    sub = cfg if node is None else OmegaConf.select(cfg, node)
    if not isinstance(sub, (DictConfig, ListConfig)):
        return sub, notes
    raw = OmegaConf.to_container(sub, resolve=False)
    return walk(raw, node or ""), notes


def composed(stage: str, overrides: list[str], conf_dir: Path | None = None) -> tuple[dict, list[str]]:
    """The resolved job config (no ``hydra`` node) of ``stage`` with ``overrides``, and notes."""
    with hydra_conf(conf_dir):
        cfg = compose(stage, overrides)
        plain, notes = resolve(cfg)
    plain.pop("hydra", None)
    return plain, notes


def _flag_value(argv: list[str], names: tuple[str, ...]) -> str | None:
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def show_cfg(stage: str, argv: list[str]) -> int:
    """``--cfg job|hydra|all [--package P]`` (and ``--resolve`` alone = ``--cfg job``): print the
    composed config, resolved; exit status 2 with one line for a bad name."""
    import sys

    import yaml

    from ..cli import _overrides, check_config_dirs
    from ..config import validate

    check_config_dirs()
    kind = _flag_value(argv, ("--cfg", "-c")) or "job"
    if kind not in ("job", "hydra", "all"):
        raise PipelineError(f"bad --cfg {kind!r}; expected job, hydra or all")
    package = _flag_value(argv, ("--package", "-p"))
    overrides, sweeps = first_of_sweeps([a for a in _overrides(argv) if a not in ("-m", "--multirun")])
    with hydra_conf():
        cfg = compose(stage, overrides, with_hydra=True)
        try:
            validate(cfg)
        except PipelineError as exc:
            if "missing value" not in str(exc):
                raise
        node = {"job": None, "hydra": "hydra", "all": None}[kind]
        if package not in (None, "_global_"):
            node = package if kind != "hydra" else f"hydra.{package}"
        data, notes = resolve(cfg, node)
    if data is None:
        raise PipelineError(f"package {package!r} not found in the {kind} config")
    if kind == "job" and isinstance(data, dict) and node is None:
        data.pop("hydra", None)
    if kind == "hydra" and node == "hydra":
        data = {"hydra": data}
    if sweeps:
        print(f"# a sweep: showing its first job ({', '.join(sweeps)})")
    if package not in (None, "_global_"):
        print(f"# @package {package}")
    if isinstance(data, (dict, list)):
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))
    else:
        print(data)
    seen = set()
    for n in notes:
        if n not in seen and not n.startswith("hydra."):  # Hydra fills its ??? in the job
            seen.add(n)
            print(f"note: {n}", file=sys.stderr)
    return 0


def check_composes(stage: str, overrides: list[str]) -> None:
    """Raise a one-line PipelineError when ``overrides`` name something that does not exist."""
    from ..cli import check_config_dirs

    check_config_dirs()
    ov, _ = first_of_sweeps([o for o in overrides if not o.startswith(("hydra.", "hydra/"))])
    with hydra_conf():
        compose(stage, ov)
