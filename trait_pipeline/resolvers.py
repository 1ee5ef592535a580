"""OmegaConf resolvers used by conf/: every path in a config comes from :mod:`.layout`.

Registered once per process by :func:`register` (the entry points and submitit jobs call it).

>>> register()
>>> from omegaconf import OmegaConf
>>> OmegaConf.create({"p": "${tp.posdir:response[:5]}"}).p
'response__5'
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from omegaconf import OmegaConf

from .layout import Layout, default_cache_dir, project_dir
from .positions import position_dirname


def _run_id() -> str:
    # unique even when two jobs of one sweep start in the same second
    return time.strftime("%Y-%m-%d_%H-%M-%S") + "_" + secrets.token_hex(2)


def _sweep_id(sweep_dir: str) -> str:
    # the sweep folder's name (its timestamp): run folders of a sweep's jobs carry it
    return Path(str(sweep_dir)).name


def _one_trait(trait) -> str | None:
    """The trait of a job, or None for a job over several (``trait=[a,b]``)."""
    if isinstance(trait, str):
        return trait
    traits = list(trait)
    return str(traits[0]) if len(traits) == 1 else None


def _extraction_dir(experiments: str, experiment: str, trait, variant: str) -> str:
    lay = Layout(Path(experiments), experiment)
    one = _one_trait(trait)
    return str(lay.extraction_dir(one, variant) if one else lay.multi_trait_dir("extraction", variant))


def _steering_dir(experiments, experiment, trait, variant, position, prompt_set) -> str:
    lay = Layout(Path(experiments), experiment)
    one = _one_trait(trait)
    if one is None:  # several traits: each writes its own steering folder; the job's runs go here
        return str(lay.multi_trait_dir("steering", variant))
    return str(lay.steering_dir(one, variant, position, prompt_set))


def _inference_dir(experiments: str, experiment: str, variant: str) -> str:
    return str(Layout(Path(experiments), experiment).inference_dir(variant))


def _comparison_dir(experiments: str, experiment: str, trait: str, prompt_set: str) -> str:
    return str(Layout(Path(experiments), experiment).comparison_dir(trait, prompt_set))


def _sweeps_dir(experiments: str, experiment: str, stage: str) -> str:
    return str(Layout(Path(experiments), experiment).sweeps_dir(stage))


_RESOLVERS = {
    "tp.project": lambda: str(project_dir()),  # $TRAIT_PIPELINE_PROJECT or the working dir
    "tp.root": lambda: str(project_dir()),  # older name of tp.project
    "tp.cache": lambda: str(default_cache_dir()),
    "tp.posdir": position_dirname,
    "tp.run_id": _run_id,
    "tp.sweep_id": _sweep_id,
    "tp.extraction_dir": _extraction_dir,
    "tp.steering_dir": _steering_dir,
    "tp.inference_dir": _inference_dir,
    "tp.comparison_dir": _comparison_dir,
    "tp.sweeps_dir": _sweeps_dir,
    "tp.env_pid": lambda: str(os.getpid()),
}


def register() -> None:
    for name, fn in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=False)
