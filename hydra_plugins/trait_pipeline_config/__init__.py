"""Where trait-pipeline's configs come from: the user's config dirs, and variants as data.

Hydra finds these two plugins by scanning the ``hydra_plugins`` namespace package. Both act only
on trait-pipeline's own apps (those whose primary config dir is the shipped ``conf/``), never on
another Hydra app installed next to it.

:class:`ProjectSearchPath` puts the user's config dirs before the shipped ones, so a preset in
``./conf/experiment/`` (or under ``$TRAIT_PIPELINE_CONFIG_PATH``) is found first and a shipped
one of the same name is shadowed::

    $ trait-pipeline extract --info searchpath
    | trait-pipeline project | file:///home/me/proj/conf
    | main                   | file:///.../site-packages/trait_pipeline/_shipped/conf
    | trait-pipeline variants| tp-variants://

:class:`VariantSource` (scheme ``tp-variants://``, last in that order) answers
``model_variant=<any name>`` with the same few interpolations, which read the variant's fields
from the chosen experiment's ``variants.<name>`` table. So a variant is data: a new name is
one entry in an experiment preset and no file. A file ``conf/model_variant/<name>.yaml`` still
wins where a variant needs something the table cannot say. A name the experiment does not
define fails before any model loads, naming the ones it does (``config.validate``).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin

VARIANT_GROUP = "model_variant"
VARIANT_SCHEME = "tp-variants"


def _is_our_app(search_path: ConfigSearchPath) -> bool:
    from trait_pipeline.layout import CONF_DIR

    shipped = CONF_DIR.resolve()
    for element in search_path.get_path():
        if element.provider == "main" and element.path is not None:
            path = element.path.split("://", 1)[-1]
            try:
                return Path(path).resolve() == shipped
            except OSError:
                return False
    return False


class ProjectSearchPath(SearchPathPlugin):
    """The user's config dirs before the shipped ``conf/``; the variant source after it."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not _is_our_app(search_path):
            return
        from trait_pipeline.layout import CONFIG_PATH_ENV, project_dir, user_config_dirs

        own = project_dir() / "conf"
        have = {e.path for e in search_path.get_path()}
        for d in user_config_dirs():
            url = f"file://{d}"
            if url in have:
                continue
            provider = "trait-pipeline project" if d == own else f"${CONFIG_PATH_ENV}"
            search_path.prepend(provider, url, anchor=SearchPathQuery(provider="main"))
        if f"{VARIANT_SCHEME}://" not in have:
            search_path.append("trait-pipeline variants", f"{VARIANT_SCHEME}://")


def variant_names() -> list[str]:
    """Variant names defined by the experiment presets in every config dir (for listings)."""
    import yaml

    from trait_pipeline.layout import NAME_RE, config_dirs

    names: set[str] = set()
    for d in config_dirs():
        for preset in sorted((d / "experiment").glob("*.yaml")):
            try:
                data = yaml.safe_load(preset.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                continue  # composition reports a broken preset when it is used
            table = data.get("variants") if isinstance(data, dict) else None
            if isinstance(table, dict):
                names.update(str(n) for n in table if NAME_RE.match(str(n)))
    return sorted(names)


def variant_node(name: str) -> dict:
    """What ``model_variant=<name>`` composes: every field read from ``variants.<name>``.

    >>> variant_node("cmp")["lora"]
    '${oc.select:variants.${model_variant.name}.lora,null}'
    """
    from trait_pipeline.config import default_use_chat_template

    field = "variants.${model_variant.name}"
    chat = "true" if default_use_chat_template(name) else "false"
    return {
        "name": name,
        "model": "${" + field + ".model}",
        "lora": "${oc.select:" + field + ".lora,null}",
        "use_chat_template": "${oc.select:" + field + ".use_chat_template," + chat + "}",
        "dtype": "${oc.select:" + field + ".dtype,${dtype}}",
        "revision": "${oc.select:" + field + ".revision,null}",
    }


class VariantSource(ConfigSource):
    """``model_variant/<name>`` for any well-formed name, built by :func:`variant_node`."""

    @staticmethod
    def scheme() -> str:
        return VARIANT_SCHEME

    @staticmethod
    def _name(config_path: str) -> str | None:
        from trait_pipeline.layout import NAME_RE

        path = config_path.removesuffix(".yaml")
        group, _, name = path.partition("/")
        if group != VARIANT_GROUP or "/" in name or not NAME_RE.match(name):
            return None
        return name

    def load_config(self, config_path: str) -> ConfigResult:
        from omegaconf import OmegaConf

        name = self._name(config_path)
        if name is None:
            raise ConfigLoadError(f"Config not found: {config_path}")
        return ConfigResult(config=OmegaConf.create(variant_node(name)), path=self.full_path(),
                            provider=self.provider, header={"package": None})

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", VARIANT_GROUP)

    def is_config(self, config_path: str) -> bool:
        return self._name(config_path) is not None

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        path = config_path.strip("/")
        if path == "" and results_filter in (None, ObjectType.GROUP):
            return [VARIANT_GROUP]
        if path == VARIANT_GROUP and results_filter in (None, ObjectType.CONFIG):
            return variant_names()
        return []
