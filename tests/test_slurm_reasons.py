"""Which pending reasons mean "never" (trait_pipeline.launch.slurm_reasons).

The ones the one-node cluster can produce (PartitionConfig, BadConstraints, PartitionTimeLimit,
ReqNodeNotAvail) are also met for real in test_slurm_launcher.py; the accounting ones
(InvalidAccount, InvalidQOS, Assoc*/QOS* limits) need a slurmdbd this cluster does not run,
so their classification is tested here, on SLURM's own reason names.
"""

import pytest

from trait_pipeline.launch.slurm_reasons import NEVER, classify, normalize


@pytest.mark.parametrize("reason,setting", [
    ("PartitionConfig", "cpus_per_task"),
    ("BadConstraints", "constraint"),
    ("PartitionTimeLimit", "timeout_min"),
    ("PartitionNodeLimit", "nodes"),
    ("InvalidAccount", "account"),
    ("InvalidQOS", "qos"),
    ("AccountNotAllowed", "account"),
    ("QOSNotAllowed", "qos"),
    ("MaxMemPerLimit", "mem_gb"),
    ("QOSMaxWallDurationPerJobLimit", "timeout_min"),
    ("AssocMaxWallDurationPerJobLimit", "timeout_min"),
    ("QOSMaxCpuPerJobLimit", "cpus_per_task"),
    ("AssocMaxCpuPerJobLimit", "cpus_per_task"),
    ("QOSMaxMemoryPerJob", "mem_gb"),
    ("QOSMaxGRESPerJob", "gpus_per_node"),
    ("QOSMaxNodePerJobLimit", "nodes"),
    ("QOSMinCpuNotSatisfied", "cpus_per_task"),
])
def test_never_reasons_name_the_setting(reason, setting):
    v = classify(reason)
    assert v.never and v.reason == reason and setting in v.settings


@pytest.mark.parametrize("reason", ["Priority", "Resources", "BeginTime", "JobArrayTaskLimit", "Dependency",
                                    "QOSMaxCpuPerUserLimit", "AssocGrpCpuLimit", "JobHeldUser", "None", ""])
def test_reasons_that_clear_by_themselves_are_waited_on(reason):
    assert not classify(reason).never


def test_job_count_limits_are_never_only_when_nothing_of_yours_runs():
    for reason in ("AssocMaxJobsLimit", "QOSMaxJobsPerUserLimit", "AssocGrpJobsLimit"):
        assert not classify(reason, user_has_running=True).never   # a running job will end and free a slot
        assert classify(reason, user_has_running=False).never


def test_req_node_not_avail_is_never_only_when_every_node_is_down():
    text = "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions"
    assert normalize(text) == "ReqNodeNotAvail"
    assert normalize("ReqNodeNotAvail, UnavailableNodes:n[1-4]") == "ReqNodeNotAvail"
    assert not classify(text, all_nodes_unavailable=False).never  # some node is only busy/reserved
    assert classify(text, all_nodes_unavailable=True).never


def test_every_never_reason_is_a_real_slurm_reason_name():
    # SLURM's names are CamelCase words; a typo here would make the launcher wait forever
    assert all(r.isidentifier() and r[0].isupper() for r in NEVER)
