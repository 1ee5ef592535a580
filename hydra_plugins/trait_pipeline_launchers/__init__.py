"""trait-pipeline's Hydra launchers: ``hydra/launcher=local`` and ``hydra/launcher=slurm``.

Hydra finds them by scanning the ``hydra_plugins`` namespace package; their settings are the
YAML files in ``conf/hydra/launcher/``. See docs/launchers.md.
"""
