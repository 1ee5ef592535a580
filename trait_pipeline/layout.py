"""The on-disk layout: the one place that knows where every file of an experiment lives.

Everything else (stages, migration, dashboard, Hydra's output dirs through the ``tp.*``
resolvers) asks this module for paths; nothing rebuilds a template by hand.

    experiments/{experiment}/
      extraction/{trait}/{variant}/responses/ vetting/ activations/{position}/{component}/
                                   vectors/{position}/{component}/{method}/layer{L}.safetensors
                                   vectors/{position}/{component}/evaluation.{json,png} logit_lens.json
      extraction/_evaluation/{variant}.json
      steering/{trait}/{variant}/{position}/{prompt_set}/results.json, responses/
      inference/{variant}/raw/{prompt_set}/{id}.safetensors  responses/{prompt_set}/{id}.json
                          projections/{trait}/{prompt_set}/{id}.json
                          replay/{source}/{raw,responses,projections}/...   (source's tokens)
                          massive_activations/{prompt_set}.json   chat/{chat_id}.json
      inference/_compare/{trait}/{prompt_set}/{a}_vs_{b}.{json,png}
      sweeps/{stage}/{timestamp}/           (variant-neutral: multirun.yaml, submitit logs)

``{trait}`` is ``category/name`` (two directory levels); ``{position}`` is the directory
name of a position (:mod:`trait_pipeline.positions`).

>>> lay = Layout(Path("experiments"), "demo")
>>> lay.vector_path("demo/optimism", "base", "response[:5]", "residual", "mean_diff", 10).as_posix()
'experiments/demo/extraction/demo/optimism/base/vectors/response__5/residual/mean_diff/layer10.safetensors'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .positions import Position, position_dirname

PACKAGE_DIR = Path(__file__).resolve().parent
# The source checkout (a clone, installed editable or not at all). In an installed wheel this is
# site-packages: nothing should be read from or written to it there; see project_dir().
PROJECT_ROOT = PACKAGE_DIR.parent
# A wheel carries the repository's top-level conf/ and datasets/ here (setup.py copies them at
# build time); a clone has no such folder and reads the top-level ones directly.
SHIPPED_DIR = PACKAGE_DIR / "_shipped"
IS_INSTALLED_WHEEL = SHIPPED_DIR.is_dir()
CONF_DIR = (SHIPPED_DIR if IS_INSTALLED_WHEEL else PROJECT_ROOT) / "conf"  # the shipped configs
DATASETS_DIR = (SHIPPED_DIR if IS_INSTALLED_WHEEL else PROJECT_ROOT) / "datasets"  # shipped data

PROJECT_ENV = "TRAIT_PIPELINE_PROJECT"  # the user's project dir (default: the working directory)
CONFIG_PATH_ENV = "TRAIT_PIPELINE_CONFIG_PATH"  # more config dirs, searched first (os.pathsep)
EXPERIMENTS_ENV = "TRAIT_PIPELINE_EXPERIMENTS"
CACHE_ENV = "TRAIT_PIPELINE_CACHE"

# fullmatch-only patterns (``$`` would accept a trailing newline); ASCII so that a name is
# the same bytes on every file system
MAX_NAME_LEN = 100  # one path component; file systems allow 255 bytes, suffixes need room
_PART = "[A-Za-z0-9][A-Za-z0-9_.-]{0,%s}" % str(MAX_NAME_LEN - 1)  # noqa: UP031
TRAIT_RE = re.compile(f"{_PART}/{_PART}", re.ASCII)
NAME_RE = re.compile(_PART, re.ASCII)
STEERING_PROMPT_SET = "steering"  # the prompt set of steering.json questions
SCHEMA_VERSION = 1  # of every JSON file written for the dashboard


class LayoutError(ValueError):
    """A name that cannot become part of a path (empty, traversal, wrong shape)."""


def _shown(value: object) -> str:
    """A bad name as an error shows it: repr (control characters visible), at most 60 chars."""
    text = repr(value)
    return text if len(text) <= 60 else text[:50] + f"...' ({len(str(value))} chars)"


def is_name(value: object) -> bool:
    """Whether ``value`` can be one path component: ASCII letters, digits, ``_ - .``, not
    starting with ``.``/``-``/``_``, at most :data:`MAX_NAME_LEN` characters.

    The dashboard API and every stage use this check (and :func:`is_trait`) for names that
    become paths.

    >>> is_name("rm_lora"), is_name("a/b"), is_name("x\\n"), is_name("a" * 101), is_name("..")
    (True, False, False, False, False)
    """
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


def is_trait(value: object) -> bool:
    """``category/name``, each part a valid :func:`is_name`."""
    return isinstance(value, str) and TRAIT_RE.fullmatch(value) is not None


def check_trait(trait: str) -> str:
    if not is_trait(trait):
        raise LayoutError(f"bad trait {_shown(trait)}: expected category/name, e.g. demo/optimism "
                          f"(letters, digits, '_', '-', '.'; at most {MAX_NAME_LEN} characters each)")
    return trait


def check_name(kind: str, value: str) -> str:
    if not is_name(value):
        raise LayoutError(f"bad {kind} {_shown(value)}: expected letters, digits, '_', '-' or '.' "
                          f"(at most {MAX_NAME_LEN} characters)")
    return value


# -- where a user's configs, data, outputs and caches are ------------------------------------
def project_dir() -> Path:
    """The user's project directory: ``$TRAIT_PIPELINE_PROJECT``, else the working directory.

    It may hold ``conf/`` (presets, variants, judges: found before the shipped ones),
    ``datasets/`` (traits and prompt sets: likewise) and receives ``experiments/``.
    """
    env = os.environ.get(PROJECT_ENV)
    return Path(env).expanduser().resolve() if env else Path.cwd().resolve()


def user_config_dirs() -> list[Path]:
    """Config dirs searched before the shipped ``conf/``, first wins.

    ``$TRAIT_PIPELINE_CONFIG_PATH`` entries (missing ones included, so a typo can be reported),
    then ``<project>/conf`` when it exists. The shipped conf dir itself is never listed (a clone
    run from its root has project conf == shipped conf).
    """
    dirs = [Path(p).expanduser().resolve()
            for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p.strip()]
    own = project_dir() / "conf"
    if own.is_dir():
        dirs.append(own)
    out: list[Path] = []
    for d in dirs:
        if d != CONF_DIR.resolve() and d not in out:
            out.append(d)
    return out


def config_dirs() -> list[Path]:
    """Every config dir, in search order: the user's, then the shipped one."""
    return [*user_config_dirs(), CONF_DIR]


def default_experiments_dir() -> Path:
    """``$TRAIT_PIPELINE_EXPERIMENTS``, else ``<project>/experiments``."""
    env = os.environ.get(EXPERIMENTS_ENV)
    return Path(env).expanduser() if env else project_dir() / "experiments"


def default_cache_dir() -> Path:
    """``$TRAIT_PIPELINE_CACHE``; else ``.cache/`` of a clone; else ``~/.cache/trait-pipeline``.

    An installed wheel never writes next to its code (site-packages): the demo family and the
    judge cache are per user there (``$XDG_CACHE_HOME/trait-pipeline`` when that is set).
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if not IS_INSTALLED_WHEEL:
        return PROJECT_ROOT / ".cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "trait-pipeline"


def __getattr__(name: str) -> Path:
    # older name, still imported by some modules: the project's experiments dir, computed when
    # asked for (it depends on the working directory and the environment)
    if name == "DEFAULT_EXPERIMENTS_DIR":
        return project_dir() / "experiments"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def datasets_dir() -> Path:
    """The shipped datasets (see :func:`dataset_roots` for the search order)."""
    return DATASETS_DIR


def dataset_roots(root: Path | None = None) -> list[Path]:
    """Where datasets are looked up, first match wins.

    ``root`` (a stage passes its ``paths.datasets``; default ``<project>/datasets``), then the
    shipped datasets, which so stay available next to a user's own.
    """
    first = Path(root) if root is not None else project_dir() / "datasets"
    roots = [first]
    if first.resolve() != DATASETS_DIR.resolve():
        roots.append(DATASETS_DIR)
    return roots


def trait_data_dir(trait: str, root: Path | None = None) -> Path:
    """``datasets/traits/{category}/{name}`` of the first dataset root that has it.

    When none has it: the path under the first root (callers report it missing).
    """
    rel = Path("traits") / check_trait(trait)
    roots = dataset_roots(root)
    return next((r / rel for r in roots if (r / rel).is_dir()), roots[0] / rel)


def prompt_set_path(prompt_set: str, root: Path | None = None) -> Path:
    """``datasets/inference/{prompt_set}.json`` of the first dataset root that has it."""
    rel = Path("inference") / f"{check_name('prompt set', prompt_set)}.json"
    roots = dataset_roots(root)
    return next((r / rel for r in roots if (r / rel).is_file()), roots[0] / rel)


def layer_file(layer: int) -> str:
    return f"layer{int(layer)}.safetensors"


def coef_label(coef: float) -> str:
    """A coefficient as it appears in file names: ``4.0`` -> ``4``, ``-2.5`` -> ``-2.5``."""
    return f"{float(coef):g}"


@dataclass(frozen=True)
class Layout:
    """Paths of one experiment under an experiments directory."""

    experiments: Path
    experiment: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "experiments", Path(self.experiments))
        check_name("experiment", self.experiment)

    @property
    def root(self) -> Path:
        return self.experiments / self.experiment

    def within(self, path: Path) -> bool:
        """Whether ``path`` (symlinks followed) stays inside the experiments folder."""
        return within(path, self.experiments)

    # extraction -------------------------------------------------------------------------
    def extraction_dir(self, trait: str, variant: str) -> Path:
        return self.root / "extraction" / check_trait(trait) / check_name("model variant", variant)

    def responses_dir(self, trait: str, variant: str) -> Path:
        return self.extraction_dir(trait, variant) / "responses"

    def vetting_dir(self, trait: str, variant: str) -> Path:
        return self.extraction_dir(trait, variant) / "vetting"

    def activations_dir(self, trait: str, variant: str, position: str, component: str) -> Path:
        return (
            self.extraction_dir(trait, variant) / "activations" / position_dirname(position)
            / check_name("component", component)
        )

    def vectors_dir(
        self, trait: str, variant: str, position: str, component: str, method: str
    ) -> Path:
        return (
            self.extraction_dir(trait, variant) / "vectors" / position_dirname(position)
            / check_name("component", component) / check_name("method", method)
        )

    def vector_path(
        self, trait: str, variant: str, position: str, component: str, method: str, layer: int
    ) -> Path:
        return self.vectors_dir(trait, variant, position, component, method) / layer_file(layer)

    def vector_results_dir(self, trait: str, variant: str, position: str, component: str) -> Path:
        """``vectors/{position}/{component}/``: what was measured about the vectors in it."""
        return (
            self.extraction_dir(trait, variant) / "vectors" / position_dirname(position)
            / check_name("component", component)
        )

    def logit_lens_path(self, trait: str, variant: str, position: str | None = None,
                        component: str | None = None) -> Path:
        """``vectors/{position}/{component}/logit_lens.json`` (extract writes one per position
        and component); without them the trait-level file of migrated legacy experiments."""
        if position is None or component is None:
            return self.extraction_dir(trait, variant) / "logit_lens.json"
        return self.vector_results_dir(trait, variant, position, component) / "logit_lens.json"

    def trait_evaluation_path(self, trait: str, variant: str, position: str, component: str) -> Path:
        """Val metrics of every method x layer at one position and component (+ best)."""
        return self.vector_results_dir(trait, variant, position, component) / "evaluation.json"

    def evaluation_plot_path(self, trait: str, variant: str, position: str, component: str) -> Path:
        """The layer x method heatmap of :meth:`trait_evaluation_path`."""
        return self.vector_results_dir(trait, variant, position, component) / "evaluation.png"

    def evaluation_path(self, variant: str) -> Path:
        """Per-variant evaluation of every trait x method x layer (``_`` keeps it apart from categories)."""
        return self.root / "extraction" / "_evaluation" / f"{check_name('model variant', variant)}.json"

    def multi_trait_dir(self, area: str, variant: str) -> Path:
        """``{area}/_multi_trait/{variant}``: where a job over several traits keeps its run folders
        (config snapshot, log, summary); each trait's outputs still go to its own folder.
        ``_`` keeps it apart from trait categories."""
        return self.root / check_name("area", area) / "_multi_trait" / check_name("model variant", variant)

    # steering ---------------------------------------------------------------------------
    def steering_dir(self, trait: str, variant: str, position: str, prompt_set: str) -> Path:
        return (
            self.root / "steering" / check_trait(trait) / check_name("model variant", variant)
            / position_dirname(position) / check_name("prompt set", prompt_set)
        )

    def results_path(self, trait: str, variant: str, position: str, prompt_set: str) -> Path:
        return self.steering_dir(trait, variant, position, prompt_set) / "results.json"

    def steering_responses_dir(self, trait: str, variant: str, position: str, prompt_set: str) -> Path:
        return self.steering_dir(trait, variant, position, prompt_set) / "responses"

    def baseline_path(self, trait: str, variant: str, position: str, prompt_set: str) -> Path:
        return self.steering_responses_dir(trait, variant, position, prompt_set) / "baseline.json"

    def run_responses_path(
        self, trait: str, variant: str, position: str, prompt_set: str,
        component: str, layer: int | str, coef: float | str, timestamp: str,
        method: str | None = None,
    ) -> Path:
        """``responses/{component}/[{method}/]L{layer}_c{coef}_{timestamp}.json``."""
        coef_s = coef if isinstance(coef, str) else coef_label(coef)
        folder = self.steering_responses_dir(trait, variant, position, prompt_set) / check_name(
            "component", component)
        if method is not None:
            folder = folder / check_name("method", method)
        return folder / f"L{layer}_c{coef_s}_{timestamp}.json"

    # inference --------------------------------------------------------------------------
    def inference_dir(self, variant: str, replayed_from: str | None = None) -> Path:
        """``inference/{variant}``; a replay of another variant's responses gets its own
        mirror tree ``inference/{variant}/replay/{source}/`` so it never mixes with the
        variant's own generations (same sub-folders and file names inside)."""
        base = self.root / "inference" / check_name("model variant", variant)
        if replayed_from is None:
            return base
        return base / "replay" / check_name("model variant", replayed_from)

    def raw_dir(self, variant: str, prompt_set: str, replayed_from: str | None = None) -> Path:
        return self.inference_dir(variant, replayed_from) / "raw" / check_name("prompt set", prompt_set)

    def raw_path(self, variant: str, prompt_set: str, prompt_id: int | str,
                 replayed_from: str | None = None) -> Path:
        """Per-token activations of one prompt (safetensors)."""
        name = check_name("prompt id", str(prompt_id))
        return self.raw_dir(variant, prompt_set, replayed_from) / f"{name}.safetensors"

    def inference_responses_dir(self, variant: str, prompt_set: str,
                                replayed_from: str | None = None) -> Path:
        return (
            self.inference_dir(variant, replayed_from) / "responses"
            / check_name("prompt set", prompt_set)
        )

    def inference_response_path(self, variant: str, prompt_set: str, prompt_id: int | str,
                                replayed_from: str | None = None) -> Path:
        name = check_name("prompt id", str(prompt_id))
        return self.inference_responses_dir(variant, prompt_set, replayed_from) / f"{name}.json"

    def projections_dir(self, variant: str, trait: str, prompt_set: str,
                        replayed_from: str | None = None) -> Path:
        return (
            self.inference_dir(variant, replayed_from) / "projections" / check_trait(trait)
            / check_name("prompt set", prompt_set)
        )

    def projection_path(self, variant: str, trait: str, prompt_set: str, prompt_id: int | str,
                        replayed_from: str | None = None) -> Path:
        name = check_name("prompt id", str(prompt_id))
        return self.projections_dir(variant, trait, prompt_set, replayed_from) / f"{name}.json"

    def sae_dir(self, variant: str) -> Path:
        """``inference/{variant}/sae``: SAE feature JSON of the variant's captures."""
        return self.inference_dir(variant) / "sae"

    def massive_activations_dir(self, variant: str) -> Path:
        """``inference/{variant}/massive_activations``: ``{prompt_set}.json`` calibration stats."""
        return self.inference_dir(variant) / "massive_activations"

    def massive_activations_path(self, variant: str, prompt_set: str) -> Path:
        """The calibration of ``variant``'s massive dims over one prompt set."""
        return (self.massive_activations_dir(variant)
                / f"{check_name('prompt set', prompt_set)}.json")

    def chat_dir(self, variant: str) -> Path:
        """``inference/{variant}/chat``: conversations saved from the dashboard's live chat."""
        return self.inference_dir(variant) / "chat"

    def chat_path(self, variant: str, chat_id: str) -> Path:
        return self.chat_dir(variant) / f"{check_name('chat id', chat_id)}.json"

    def inference_legacy_dir(self, variant: str) -> Path:
        """``inference/{variant}/legacy``: migrated files no stage reads (layer-internals
        captures, attn_out projections of the original), kept with the variant they belong to."""
        return self.inference_dir(variant) / "legacy"

    def comparison_dir(self, trait: str, prompt_set: str) -> Path:
        """Variant comparisons involve two variants, so they live beside them, not inside one."""
        return self.root / "inference" / "_compare" / check_trait(trait) / check_name("prompt set", prompt_set)

    # migration --------------------------------------------------------------------------
    def migration_dir(self) -> Path:
        """``.migration/``: the migration manifest and the original bytes of converted files."""
        return self.root / ".migration"

    def migration_manifest_path(self) -> Path:
        return self.migration_dir() / "manifest.json"

    def migration_original_path(self, rel: str) -> Path:
        """Where the original bytes of ``rel`` (relative to the experiment root) are kept."""
        return self.migration_dir() / "originals" / rel

    # sweeps -----------------------------------------------------------------------------
    def sweeps_dir(self, stage: str) -> Path:
        return self.root / "sweeps" / check_name("stage", stage)

    # discovery --------------------------------------------------------------------------
    def vector_files(self, trait: str, variant: str) -> list[tuple[str, str, str, int, Path]]:
        """Every saved vector of a trait: ``(position, component, method, layer, path)``, sorted."""
        base = self.extraction_dir(trait, variant) / "vectors"
        out = []
        for path in sorted(base.glob("*/*/*/layer*.safetensors")):
            if not self.within(path):
                continue
            pos_dir, comp, method = path.parts[-4:-1]
            m = re.fullmatch(r"layer(\d+)\.safetensors", path.name)
            try:
                position = parse_position_dir(pos_dir)
            except ValueError:
                continue
            if m and NAME_RE.fullmatch(comp) and NAME_RE.fullmatch(method):
                out.append((position, comp, method, int(m.group(1)), path))
        return out

    def logit_lens_files(self, trait: str, variant: str) -> list[tuple[str | None, str | None, Path]]:
        """Logit-lens JSONs of a trait: ``(position, component, path)``, sorted. The extract
        stage writes one per vector site (``vectors/{pos}/{comp}/logit_lens.json``); a
        trait-level ``logit_lens.json`` (migrated data) comes last with ``None`` for both."""
        base = self.extraction_dir(trait, variant) / "vectors"
        out: list[tuple[str | None, str | None, Path]] = []
        for path in sorted(base.glob("*/*/logit_lens.json")):
            if not self.within(path):
                continue
            try:
                position = parse_position_dir(path.parent.parent.name)
            except ValueError:
                continue
            if NAME_RE.fullmatch(path.parent.name):
                out.append((position, path.parent.name, path))
        legacy = self.logit_lens_path(trait, variant)
        if legacy.is_file() and self.within(legacy):
            out.append((None, None, legacy))
        return out

    def steering_results_files(self, trait: str, variant: str) -> list[tuple[str, str, Path]]:
        """Every steering ``results.json`` of a trait on a variant: ``(position, prompt_set, path)``."""
        base = self.root / "steering" / check_trait(trait) / check_name("model variant", variant)
        out = []
        for path in sorted(base.glob("*/*/results.json")):
            if not self.within(path):
                continue
            try:
                position = parse_position_dir(path.parent.parent.name)
            except ValueError:
                continue
            out.append((position, path.parent.name, path))
        return out

    def replay_sources(self, variant: str) -> list[str]:
        """Variants whose responses were replayed through ``variant``, sorted."""
        base = self.inference_dir(variant) / "replay"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir()
                      if p.is_dir() and NAME_RE.fullmatch(p.name) and self.within(p))

    def evaluation_variants(self) -> list[str]:
        """Variants with an ``extraction/_evaluation/{variant}.json``, sorted."""
        base = self.root / "extraction" / "_evaluation"
        if not base.is_dir():
            return []
        return sorted(p.stem for p in base.glob("*.json")
                      if p.is_file() and NAME_RE.fullmatch(p.stem) and self.within(p))

    def projection_traits(self, variant: str, replayed_from: str | None = None) -> list[str]:
        """Traits with projections under ``inference/{variant}[/replay/{source}]``, sorted."""
        base = self.inference_dir(variant, replayed_from) / "projections"
        return _two_level_names(base, self.experiments)

    def projection_sets(self, variant: str, trait: str, replayed_from: str | None = None) -> list[str]:
        """Prompt sets with at least one projection of ``trait`` on ``variant``, sorted."""
        base = self.inference_dir(variant, replayed_from) / "projections" / check_trait(trait)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir()
                      if p.is_dir() and NAME_RE.fullmatch(p.name) and self.within(p)
                      and any(p.glob("*.json")))

    def projection_ids(self, variant: str, trait: str, prompt_set: str,
                       replayed_from: str | None = None) -> list[str]:
        """Prompt ids with a projection file, numeric ids in numeric order first."""
        base = self.projections_dir(variant, trait, prompt_set, replayed_from)
        if not base.is_dir():
            return []
        ids = [p.stem for p in base.glob("*.json")
               if p.is_file() and NAME_RE.fullmatch(p.stem) and self.within(p)]
        return sorted(ids, key=lambda s: (0, int(s), "") if s.isdigit() else (1, 0, s))

    def traits(self, area: str = "extraction") -> list[str]:
        """Traits with data under ``{area}/`` (category/name), sorted; a folder holding only
        failed runs' ``runs/`` is not data."""
        return [t for t in _two_level_names(self.root / area, self.experiments)
                if has_data(self.root / area / t)]

    def variants(self, area: str = "extraction", trait: str | None = None) -> list[str]:
        """Variants with data under ``{area}/`` (for a trait, or any trait); sorted."""
        found: set[str] = set()
        if area == "inference":
            base = self.root / "inference"
            if base.is_dir():
                found = {p.name for p in base.iterdir()
                         if p.is_dir() and NAME_RE.fullmatch(p.name) and self.within(p) and has_data(p)}
        else:
            for t in [trait] if trait else self.traits(area):
                d = self.root / area / check_trait(t)
                if d.is_dir():
                    found |= {p.name for p in d.iterdir()
                              if p.is_dir() and NAME_RE.fullmatch(p.name) and self.within(p) and has_data(p)}
        return sorted(found)


def within(path: Path, root: Path) -> bool:
    """Whether ``path``, symlinks followed, lies under ``root``: discovery skips links that
    lead out of the experiments folder (a listing must not reveal or read what is outside).

    >>> within(Path("/tmp/x/../y"), Path("/tmp")), within(Path("/etc"), Path("/tmp"))
    (True, False)
    """
    try:
        real, real_root = Path(path).resolve(), Path(root).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return real == real_root or real_root in real.parents


def has_data(folder: Path) -> bool:
    """Whether ``folder`` holds a result file: anything but run folders (``runs/``: a job's
    config snapshot and log, also left by a failed job), locks and hidden files."""
    import os

    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != "runs" and not d.startswith(".")]
        if any(not f.startswith(".") and not f.endswith(".lock") for f in filenames):
            return True
    return False


def _two_level_names(base: Path, root: Path | None = None) -> list[str]:
    """``cat/name`` for every ``base/cat/name/`` directory with valid names (inside ``root``
    when given), sorted."""
    if not base.is_dir():
        return []
    out = []
    ok = (lambda p: within(p, root)) if root is not None else (lambda p: True)
    for cat in sorted(p for p in base.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name) and ok(p)):
        for name in sorted(p for p in cat.iterdir()
                           if p.is_dir() and NAME_RE.fullmatch(p.name) and ok(p)):
            out.append(f"{cat.name}/{name.name}")
    return out


def experiments(root: Path) -> list[str]:
    """Experiments under an experiments directory: sub-directories holding any stage's
    outputs (``extraction/``, ``steering/`` or ``inference/``, not just failed runs), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and NAME_RE.fullmatch(p.name) and within(p, root)
        and any((p / area).is_dir() and has_data(p / area) for area in ("extraction", "steering", "inference"))
    )


def parse_position_dir(name: str) -> str:
    """Directory name -> canonical position string (``response__5`` -> ``response[:5]``)."""
    return str(Position.from_dirname(name))
