"""Why SLURM keeps a job pending, and whether waiting can ever help.

``squeue -o %r`` gives a pending job's reason. Some reasons clear by themselves (``Priority``,
``Resources``, ``BeginTime`` after a requeue, ``JobArrayTaskLimit``); others mean the request
can never be met as it stands, and the launcher stops waiting on them (:data:`NEVER`)::

    >>> classify("PartitionConfig").never, classify("Resources").never
    (True, False)
    >>> classify("QOSMaxWallDurationPerJobLimit").settings
    ('timeout_min', 'qos')
    >>> classify("AssocMaxJobsLimit", user_has_running=True).never   # clears as your jobs end
    False

Two reasons depend on the moment: a job limit (``AssocMaxJobsLimit`` ...) is "never" only when
none of the user's jobs is running (nothing will end and free a slot), and
``ReqNodeNotAvail`` only when every node the job could use is down or drained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# reason -> (the settings that decide it, what it means)
NEVER: dict[str, tuple[tuple[str, ...], str]] = {
    "PartitionConfig": (("cpus_per_task", "mem_gb", "gpus_per_node", "gres", "nodes"),
                        "the request is more than the partition's nodes offer"),
    "BadConstraints": (("constraint", "mem_gb", "gres", "exclude"),
                       "no node has the requested features/memory/GRES"),
    "PartitionTimeLimit": (("timeout_min",), "the time limit is above the partition's"),
    "PartitionNodeLimit": (("nodes",), "more nodes than the partition allows"),
    "InvalidAccount": (("account",), "the account does not exist or is not yours"),
    "AccountNotAllowed": (("account", "partition"), "the account may not use the partition"),
    "InvalidQOS": (("qos",), "the QOS does not exist or is not allowed to you"),
    "QOSNotAllowed": (("qos", "partition"), "the QOS may not use the partition"),
    "MaxMemPerLimit": (("mem_gb",), "memory above the cluster's per-CPU/per-node maximum"),
    "DependencyNeverSatisfied": (("additional_parameters",), "a dependency that can never be met"),
    "ReservationDeleted": (("additional_parameters",), "the requested reservation is gone"),
}
# a per-job (or per-node) limit of an association or QOS: the job alone is over it
_PER_JOB = re.compile(r"^(QOS|Assoc)(Max|Min)(\w*?)(PerJob|PerNode|NotSatisfied|Limit)?(Limit)?$")
_PER_JOB_SETTING = (("Cpu", "cpus_per_task"), ("Mem", "mem_gb"), ("Node", "nodes"),
                    ("WallDuration", "timeout_min"), ("GRES", "gpus_per_node"), ("BB", "additional_parameters"))
# job-count limits: clear when other jobs of the user end
_COUNT_LIMITS = ("AssocMaxJobsLimit", "AssocGrpJobsLimit", "QOSMaxJobsPerUserLimit", "QOSGrpJobsLimit",
                 "AssocMaxSubmitJobLimit", "QOSMaxSubmitJobPerUserLimit")
# squeue prints some reasons as a sentence
_TEXTS = {
    "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions":
        "ReqNodeNotAvail",
    "Requested partition configuration not available now": "PartitionConfig",
}


@dataclass(frozen=True)
class Verdict:
    """What a pending reason means for the wait."""

    reason: str
    never: bool
    settings: tuple[str, ...] = ()
    meaning: str = ""


def normalize(reason: str | None) -> str:
    """squeue's reason as SLURM's short name: ``ReqNodeNotAvail, UnavailableNodes:n1`` -> ``ReqNodeNotAvail``."""
    text = (reason or "").strip().strip("()")
    if text in _TEXTS:
        return _TEXTS[text]
    return re.split(r"[,\s]", text, maxsplit=1)[0] if text else ""


def classify(reason: str | None, *, user_has_running: bool = True,
             all_nodes_unavailable: bool = False) -> Verdict:
    """Whether SLURM will never start a job pending for ``reason`` (see the module docstring)."""
    r = normalize(reason)
    if r in NEVER:
        settings, meaning = NEVER[r]
        return Verdict(r, True, settings, meaning)
    if r in _COUNT_LIMITS:
        return Verdict(r, not user_has_running, ("account", "qos"),
                       "a job-count limit of your account/QOS, and none of your jobs is running to free it")
    if r == "ReqNodeNotAvail":
        return Verdict(r, all_nodes_unavailable, ("partition", "exclude"),
                       "every node the job may use is down or drained")
    m = _PER_JOB.match(r)
    if m and r.startswith(("QOSMax", "AssocMax", "QOSMin")) and ("PerJob" in r or "PerNode" in r
                                                                  or r.startswith("QOSMin")):
        what = m.group(3)
        settings = tuple(s for key, s in _PER_JOB_SETTING if key in what) + (
            ("qos",) if r.startswith("QOS") else ("account",))
        return Verdict(r, True, settings, "one job alone is over a per-job limit of the QOS/association")
    return Verdict(r, False)
