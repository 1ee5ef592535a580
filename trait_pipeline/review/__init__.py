"""Reviewing runs and config changes: what each job ran with, and how two of them differ.

* :mod:`.snapshot`   the resolved config + provenance a job writes beside Hydra's files
* :mod:`.run_record` ``runs/<id>/run.json``: status, overrides, result, link to the snapshot
* :mod:`.compose`    compose a stage's config (any conf dir) and resolve it for display
* :mod:`.diff`       ``trait-pipeline diff A B`` and its review mode ``diff --rev REV``
* :mod:`.runs`       ``trait-pipeline runs [path]``: one line per run

Nothing here imports torch.
"""
