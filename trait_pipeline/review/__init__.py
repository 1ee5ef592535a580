"""Reviewing runs and config changes: what each job ran with, and how two of them differ.

* :mod:`.snapshot`   the resolved config + provenance a job writes beside Hydra's files
* :mod:`.run_record` ``runs/<id>/run.json``: status, overrides, result, link to the snapshot
* :mod:`.outcome`    a job's main measurement, as ``run.json`` keeps it
* :mod:`.compose`    compose a stage's config (any conf dir) and resolve it for display
* :mod:`.diff`       ``trait-pipeline diff A B``
* :mod:`.rev`        its review mode ``diff --rev REV``: a conf change, per stage x variant
* :mod:`.runs`       ``trait-pipeline runs [path]``: one line per run
* :mod:`.dashboard_views` the dashboard's runs / config / diff data

Nothing here imports torch.
"""
