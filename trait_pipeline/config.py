"""Typed views of a composed stage config, and the checks that run before any model loads.

>>> from omegaconf import OmegaConf
>>> cfg = OmegaConf.create({"experiment": "demo", "dtype": "float32",
...     "variants": {"base": {"model": "demo:base", "use_chat_template": False}},
...     "model_variant": {"name": "base", "model": "demo:base", "lora": None,
...                       "use_chat_template": False, "dtype": "float32", "revision": None}})
>>> variant_spec(cfg).model
'demo:base'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import PipelineError, one_line
from .layout import TRAIT_RE, Layout, dataset_roots, prompt_set_path, trait_data_dir
from .positions import PositionError, canonical

COMPONENTS = (
    "residual", "attn_out", "mlp_out", "k_proj", "v_proj", "attn_contribution", "mlp_contribution",
)
METHODS = ("mean_diff", "probe", "gradient", "random_baseline")


@dataclass(frozen=True)
class VariantSpec:
    """What to load for a model variant.

    ``model`` and ``lora`` are hub ids or local paths (``demo:*`` refers to the demo family).
    """

    name: str
    model: str
    lora: str | None = None
    use_chat_template: bool = True
    dtype: str = "bfloat16"
    revision: str | None = None


def default_use_chat_template(variant: str) -> bool:
    """A variant uses its tokenizer's chat template unless its table entry says otherwise,
    except ``base`` (a pretrained model, prompted by raw continuation)."""
    return variant != "base"


def as_list(value: Any) -> list:
    """A scalar or a list from the config, always as a plain list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def variant_names(cfg: DictConfig) -> list[str]:
    return sorted((cfg.get("variants") or {}).keys())


def _check_variant_defined(cfg: DictConfig, name: str, role: str) -> None:
    names = variant_names(cfg)
    if name not in names:
        raise PipelineError(
            f"{role} {name!r} is not defined by experiment {cfg.experiment!r}; "
            f"it defines: {', '.join(names) or '(none)'}"
        )


def variant_spec(cfg: DictConfig, name: str | None = None) -> VariantSpec:
    """The variant a stage runs on (``cfg.model_variant``), or another one by name."""
    try:
        if name is None or name == cfg.model_variant.name:
            mv = cfg.model_variant
            _check_variant_defined(cfg, mv.name, "model_variant")
            return VariantSpec(
                name=str(mv.name), model=str(mv.model),
                lora=None if mv.lora is None else str(mv.lora),
                use_chat_template=bool(mv.use_chat_template), dtype=str(mv.dtype),
                revision=None if mv.revision is None else str(mv.revision),
            )
        _check_variant_defined(cfg, name, "model variant")
        entry = cfg.variants[name]
        default_chat = default_use_chat_template(name)
        return VariantSpec(
            name=name, model=str(entry.model), lora=entry.get("lora"),
            use_chat_template=bool(entry.get("use_chat_template", default_chat)),
            dtype=str(entry.get("dtype", cfg.get("dtype", "bfloat16"))),
            revision=entry.get("revision"),
        )
    except OmegaConfBaseException as exc:
        raise PipelineError(f"model variant config does not resolve: {one_line(exc)}") from None


def layout(cfg: DictConfig) -> Layout:
    return Layout(Path(cfg.paths.experiments), str(cfg.experiment))


def check_trait_exists(trait: str, datasets_root: Path | None = None) -> None:
    if not isinstance(trait, str) or not TRAIT_RE.match(trait):
        raise PipelineError(f"bad trait {trait!r}: expected category/name, e.g. demo/optimism")
    if not trait_data_dir(trait, datasets_root).is_dir():
        roots = dataset_roots(datasets_root)
        have = sorted({
            f"{c.name}/{t.name}" for r in roots for c in (r / "traits").glob("*") if c.is_dir()
            for t in c.glob("*") if t.is_dir()
        })
        raise PipelineError(
            f"unknown trait {trait!r}: no directory traits/{trait} in "
            f"{' or '.join(str(r) for r in roots)}; available: {', '.join(have) or '(none)'}"
        )


def check_position(position: Any) -> None:
    try:
        canonical(str(position))
    except PositionError as exc:
        raise PipelineError(str(exc)) from None


def validate(cfg: DictConfig) -> None:
    """Checks every stage shares; raises :class:`PipelineError` with a one-line message."""
    if cfg.get("position") is not None:
        check_position(cfg.position)  # before resolving: output_dir is built from it
    try:
        for key in cfg:  # surfaces missing keys / bad interpolations (Hydra's own node aside)
            if key != "hydra":
                OmegaConf.to_container(OmegaConf.create({key: cfg[key]}, parent=cfg), resolve=True)
    except OmegaConfBaseException as exc:
        msg = one_line(exc)
        raise PipelineError(_friendly_resolution_error(cfg, msg)) from None
    variant_spec(cfg)
    vec = cfg.get("vectors")
    if vec is not None and vec.get("model_variant") is not None:
        _check_variant_defined(cfg, str(vec.model_variant), "vectors.model_variant")
    datasets_root = Path(cfg.paths.datasets) if cfg.get("paths") else None
    for trait in as_list(cfg.get("trait")):
        check_trait_exists(str(trait), datasets_root)
    if cfg.get("component") is not None and str(cfg.component) not in COMPONENTS:
        raise PipelineError(
            f"unknown component {cfg.component!r}; expected one of: {', '.join(COMPONENTS)}"
        )
    for method in as_list(cfg.get("method")):
        if str(method) not in METHODS:
            raise PipelineError(f"unknown method {method!r}; expected one of: {', '.join(METHODS)}")
    for ps in as_list(cfg.get("prompt_set")):
        if cfg.get("stage") == "infer" and ps != "all" and not prompt_set_path(str(ps), datasets_root).is_file():
            raise PipelineError(
                f"unknown prompt set {ps!r}: no file inference/{ps}.json in "
                f"{' or '.join(str(r) for r in dataset_roots(datasets_root))}"
            )


def _friendly_resolution_error(cfg: DictConfig, msg: str) -> str:
    """Turn OmegaConf's resolution errors into what the user must fix."""
    mv = cfg.get("model_variant")
    try:
        name = mv.name if mv is not None else None
    except OmegaConfBaseException:
        name = None
    if name is not None and name not in variant_names(cfg):
        return (
            f"model_variant {name!r} is not defined by experiment {cfg.get('experiment')!r}; "
            f"it defines: {', '.join(variant_names(cfg)) or '(none)'}"
        )
    if "Missing mandatory value" in msg:
        key = msg.split("full_key:")[-1].split()[0] if "full_key:" in msg else msg
        return f"missing value for {key}: set it on the command line, e.g. {key}=..."
    return f"config does not resolve: {msg}"


def hydra_snapshot_path() -> Path | None:
    """The running Hydra job's composed config (``<job dir>/.hydra/config.yaml``), or None.

    None when not under a Hydra job: a direct call of a stage's ``run(cfg)``, or a process in
    which an earlier ``compose`` left Hydra's runtime half-set (its output dir still ``???``).
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf.errors import OmegaConfBaseException

    try:
        return Path(HydraConfig.get().runtime.output_dir) / ".hydra" / "config.yaml"
    except (ValueError, OmegaConfBaseException):
        return None
