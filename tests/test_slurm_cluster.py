"""What a partition can give, and the request check before sbatch (trait_pipeline.launch.slurm_cluster).

Parsing and the rules run on hand-made partitions (no SLURM needed); the last tests ask the
one-node cluster of launchers/slurm/up.sh and skip when it is down.
"""

import shutil
import subprocess
from dataclasses import dataclass

import pytest

from trait_pipeline.launch.slurm_cluster import (
    Node,
    Partition,
    RequestError,
    check_request,
    parse_gres,
    parse_minutes,
    partitions,
    pick_partition,
    request_problems,
)


@dataclass
class Req:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    timeout_min: int = 60
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None
    mem_gb: float | None = None
    nodes: int = 1
    constraint: str | None = None
    exclude: str | None = None
    gres: str | None = None


def gpu_partition() -> Partition:
    nodes = [Node("g1", 32, 256000, parse_gres("gpu:a100:4(S:0-1)"), {"a100", "ib"}, "IDLE", ["gpu"]),
             Node("g2", 64, 512000, parse_gres("gpu:a100:8"), {"a100"}, "MIXED", ["gpu"])]
    return Partition("gpu", False, "UP", 2880, None, None, None, ["lab-a", "lab-b"], ["banned"], ["normal"], nodes)


def test_parse_slurm_times_and_gres():
    assert parse_minutes("2-00:00:00") == 2880 and parse_minutes("01:30:00") == 90
    assert parse_minutes("45") == 45 and parse_minutes("1-12") == 36 * 60 and parse_minutes("INFINITE") is None
    assert parse_gres("(null)") == {} and parse_gres("gpu:2,shard:4") == {"gpu": 2, "shard": 4}
    assert parse_gres("gpu:a100:4(S:0-1),gpu:v100:2") == {"gpu": 6, "gpu:a100": 4, "gpu:v100": 2}


def test_a_request_that_fits_has_no_problems():
    assert request_problems(Req(cpus_per_task=16, gpus_per_node=8, mem_gb=400, timeout_min=2880,
                                account="lab-a", qos="normal", constraint="a100&ib", gres="gpu:a100:2"),
                            gpu_partition()) == []


@pytest.mark.parametrize("req,setting,words", [
    (Req(cpus_per_task=65), "cpus_per_task", "at most 64 CPUs"),
    (Req(gpus_per_node=9), "gpus_per_node", "at most 8 GPUs"),
    (Req(mem_gb=600), "mem_gb", "at most 500.0 GB"),
    (Req(timeout_min=2881), "timeout_min", "(2880 min)"),
    (Req(nodes=3), "nodes", "allows (2)"),
    (Req(constraint="a100&h100"), "constraint", "the feature h100"),
    (Req(gres="gpu:v100:1"), "gres", "gpu:v100"),
    (Req(account="other-lab"), "account", "may not use partition gpu"),
    (Req(account="banned"), "account", "may not use"),
    (Req(qos="high"), "qos", "allowed: normal"),
])
def test_each_impossible_part_names_its_setting(req, setting, words):
    ((got, why),) = request_problems(req, gpu_partition())
    assert got == setting and words in why and f"hydra.launcher.{setting}=" in why


def test_a_gpu_request_on_a_cpu_partition():
    cpu = Partition("debug", True, "UP", None, None, None, None, None, [], None,
                    [Node("vm", 2, 23081, {}, set(), "IDLE", ["debug"])])
    ((setting, why),) = request_problems(Req(gpus_per_node=1), cpu)
    assert setting == "gpus_per_node" and "has no GPUs" in why


def test_unknown_partition_lists_the_real_ones():
    parts = {"gpu": gpu_partition()}
    with pytest.raises(RequestError, match="no such partition; this cluster has: gpu") as e:
        pick_partition("gpuu", parts)
    assert e.value.settings == ["partition"]
    assert pick_partition("gpu", parts).name == "gpu"


def _cluster_up() -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(
        ["sinfo", "-h"], check=False, capture_output=True).returncode == 0


@pytest.mark.slurm
@pytest.mark.skipif(not _cluster_up(), reason="SLURM cluster not up (run launchers/slurm/up.sh as root)")
def test_the_one_node_cluster_as_the_check_sees_it():
    parts = partitions()
    part = pick_partition(None, parts)  # up.sh's default partition
    assert part.default and part.nodes and part.max_time_min == 1440
    check_request(Req())  # the profile's defaults fit
    with pytest.raises(RequestError, match="cpus_per_task=512 is more than any node") as e:
        check_request(Req(cpus_per_task=512, timeout_min=10_000))
    assert e.value.settings == ["cpus_per_task", "timeout_min"] and "nothing was submitted" in str(e.value)
