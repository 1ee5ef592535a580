"""How sweeps reach a cluster: the parts of the SLURM launcher that are not Hydra plumbing.

* :mod:`.slurm_cluster` — what a partition can give a job, and whether a request fits it
  (checked before ``sbatch``, so a request that can never run fails in one line);
* :mod:`.slurm_reasons` — why SLURM keeps a job pending, and which reasons mean "never";
* :mod:`.attempts` — marking the run folder of an attempt SLURM killed (requeue, preemption).

The launchers themselves are in ``hydra_plugins/trait_pipeline_launchers``; docs/launchers.md.
"""
