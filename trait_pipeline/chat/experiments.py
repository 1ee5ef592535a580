"""An experiment's model variants for the chat, read from its preset (never from a request).

The chat composes the ``infer`` config with ``experiment=<name>`` exactly as the command
line would, so a variant loads the same model, adapter, dtype and chat-template setting as
``python -m trait_pipeline.infer model_variant=<name>``.

>>> # exp = load_experiment("demo", Path("experiments"))
>>> # exp.variants, exp.extraction_variant, exp.spec("rm_lora").lora
>>> # (['base', 'instruct', 'rm_lora'], 'base', 'demo:rm_lora')
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ..config import VariantSpec, variant_names, variant_spec
from ..errors import PipelineError, one_line
from ..layout import CONF_DIR, check_name, config_dirs

_LOCK = threading.Lock()  # Hydra's global state is not thread-safe
_CACHE: dict[tuple[str, str], ExperimentVariants] = {}


class UnknownName(PipelineError):
    """A well-formed name that the experiment does not define (HTTP 404)."""


@dataclass(frozen=True)
class ExperimentVariants:
    """What the chat may load for one experiment."""

    experiment: str
    variants: list[str]
    specs: dict[str, VariantSpec]
    extraction_variant: str  # where trait vectors come from (``vectors.model_variant``)
    application_variant: str
    default_layer: int | None  # the preset's ``layer`` (demo: 10), else best vector
    min_coherence: float

    def spec(self, name: str) -> VariantSpec:
        check_name("model variant", name)
        if name not in self.specs:
            raise UnknownName(f"variant {name!r} is not defined by experiment "
                              f"{self.experiment!r}; it defines: {', '.join(self.variants)}")
        return self.specs[name]


def presets() -> list[str]:
    """Experiment presets in every config dir (the user's and the shipped one)."""
    return sorted({p.stem for d in config_dirs() for p in (d / "experiment").glob("*.yaml")})


def load_experiment(experiment: str, experiments_dir: Path) -> ExperimentVariants:
    """Compose ``infer`` for ``experiment`` (cached per process)."""
    check_name("experiment", experiment)
    key = (experiment, str(experiments_dir))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if experiment not in presets():
            raise UnknownName(f"experiment {experiment!r} has no preset experiment/"
                              f"{experiment}.yaml in any config dir, so its variants are "
                              "unknown; presets: "
                              f"{', '.join(presets())}")
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf.errors import OmegaConfBaseException

        from .. import resolvers

        resolvers.register()
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="infer", overrides=[
                    f"experiment={experiment}", f"paths.experiments={experiments_dir}"])
            names = variant_names(cfg)
            specs = {n: variant_spec(cfg, n) for n in names}
            layer = cfg.get("layer")
            out = ExperimentVariants(
                experiment=experiment, variants=names, specs=specs,
                extraction_variant=str(cfg.vectors.model_variant),
                application_variant=str(cfg.stage_defaults.application),
                default_layer=None if layer is None else int(layer),
                min_coherence=float(cfg.min_coherence))
        except OmegaConfBaseException as exc:
            raise PipelineError(f"preset of {experiment!r} does not compose: {one_line(exc)}") from None
        finally:
            GlobalHydra.instance().clear()
        _CACHE[key] = out
        return out
