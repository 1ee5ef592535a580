"""What a SLURM partition can give one job, and whether a request fits it, asked before sbatch.

SLURM accepts many requests it can never start (more CPUs than any node has, a time above
the partition's limit) and leaves them PENDING forever. :func:`check_request` reads the
partition and its nodes (``scontrol -o show partition|node``) and raises
:class:`RequestError` naming the ``hydra.launcher.*`` setting to change::

    error: hydra.launcher.cpus_per_task=64 is more than any node of partition debug has (at most 2 CPUs) ...

Only what SLURM itself reports is checked: CPUs, memory, GPUs and other GRES, time limit,
node count, features (``constraint``), ``exclude``, and the partition's account/QOS lists
(plus the user's associations where an accounting database answers ``sacctmgr``).

>>> parse_minutes("1-00:00:00"), parse_minutes("30:00"), parse_minutes("UNLIMITED")
(1440, 30, None)
>>> parse_gres("gpu:a100:4(S:0-1),shard:8")
{'gpu': 4, 'gpu:a100': 4, 'shard': 8}
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from ..errors import PipelineError, one_line

SITE_FILE = "conf/hydra/launcher/site/slurm.yaml"
UP_HINT = "the project's one-node cluster: bash launchers/slurm/up.sh, as root"


class SlurmUnreachable(PipelineError):
    """The SLURM commands are missing or the controller does not answer."""


class RequestError(PipelineError):
    """A request no node of the partition can ever satisfy; names the settings to change."""

    def __init__(self, message: str, settings: list[str]) -> None:
        super().__init__(message)
        self.settings = settings


@dataclass
class Node:
    """One node as ``scontrol show node`` describes it."""

    name: str
    cpus: int
    memory_mb: int
    gres: dict[str, int]
    features: set[str]
    state: str
    partitions: list[str]

    @property
    def usable(self) -> bool:
        """False for nodes that are down, drained or failed (they start nothing)."""
        return not re.search(r"DOWN|DRAIN|FAIL|NOT_RESPONDING|FUTURE|POWERED_DOWN|INVAL", self.state)


@dataclass
class Partition:
    """One partition and the nodes in it."""

    name: str
    default: bool
    state: str
    max_time_min: int | None
    max_nodes: int | None
    max_cpus_per_node: int | None
    max_mem_per_node_mb: int | None
    allow_accounts: list[str] | None        # None: all
    deny_accounts: list[str]
    allow_qos: list[str] | None
    nodes: list[Node] = field(default_factory=list)


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        raise SlurmUnreachable(f"{cmd[0]} not found: this machine has no SLURM client commands "
                               f"(install slurm-wlm; {UP_HINT})")
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise SlurmUnreachable(f"{' '.join(cmd)} did not answer in 60 s; is slurmctld running? "
                               f"({UP_HINT})") from None
    if out.returncode != 0:
        msg = one_line(out.stderr or out.stdout) or f"exit status {out.returncode}"
        raise SlurmUnreachable(f"cannot ask SLURM about the cluster ({cmd[0]}: {msg}); is slurmctld "
                               f"running and reachable? ({UP_HINT})")
    return out.stdout


def _kv(line: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in line.split() if "=" in p)


def _limit(value: str | None) -> int | None:
    if value is None or value.upper() in ("UNLIMITED", "INFINITE", "N/A", "NONE", ""):
        return None
    digits = re.match(r"\d+", value)
    return int(digits.group()) if digits else None


def _names(value: str | None) -> list[str] | None:
    if value is None or value.upper() in ("ALL", "(NULL)", ""):
        return None
    return [v for v in value.split(",") if v]


def parse_minutes(value: str | None) -> int | None:
    """A SLURM time (``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``MM``) in whole minutes; None: no limit."""
    if value is None or value.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A", ""):
        return None
    days, _, rest = value.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, m, s = (parts + [0, 0])[:3]
        return int(days) * 1440 + h * 60 + m + (1 if s else 0)
    if len(parts) == 3:
        return parts[0] * 60 + parts[1] + (1 if parts[2] else 0)
    if len(parts) == 2:
        return parts[0] + (1 if parts[1] else 0)
    return parts[0]


def parse_gres(value: str | None) -> dict[str, int]:
    """``gpu:a100:4(S:0-1)`` -> counts by name and by name:type (``{'gpu': 4, 'gpu:a100': 4}``)."""
    out: dict[str, int] = {}
    if not value or value.upper() == "(NULL)":
        return out
    for item in re.split(r",(?![^(]*\))", value):
        item = re.sub(r"\(.*?\)", "", item).strip()
        if not item:
            continue
        parts = item.split(":")
        count = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        names = [p for p in parts if not p.isdigit()]
        out[names[0]] = out.get(names[0], 0) + count
        if len(names) > 1:
            key = f"{names[0]}:{names[1]}"
            out[key] = out.get(key, 0) + count
    return out


def nodes() -> list[Node]:
    """Every node SLURM knows (``scontrol -o show node``)."""
    out = []
    for line in _run(["scontrol", "-o", "show", "node"]).splitlines():
        kv = _kv(line)
        if "NodeName" not in kv:
            continue
        feats = kv.get("AvailableFeatures", "")
        out.append(Node(
            name=kv["NodeName"], cpus=int(kv.get("CPUTot", kv.get("CPUEfctv", "0")) or 0),
            memory_mb=int(kv.get("RealMemory", "0") or 0), gres=parse_gres(kv.get("Gres")),
            features=set() if feats in ("", "(null)") else set(feats.split(",")),
            state=kv.get("State", "UNKNOWN"), partitions=[p for p in kv.get("Partitions", "").split(",") if p],
        ))
    return out


def partitions() -> dict[str, Partition]:
    """Every partition, with its nodes (two ``scontrol`` calls)."""
    parts: dict[str, Partition] = {}
    for line in _run(["scontrol", "-o", "show", "partition"]).splitlines():
        kv = _kv(line)
        if "PartitionName" not in kv:
            continue
        parts[kv["PartitionName"]] = Partition(
            name=kv["PartitionName"], default=kv.get("Default") == "YES", state=kv.get("State", "UP"),
            max_time_min=parse_minutes(kv.get("MaxTime")), max_nodes=_limit(kv.get("MaxNodes")),
            max_cpus_per_node=_limit(kv.get("MaxCPUsPerNode")),
            max_mem_per_node_mb=_limit(kv.get("MaxMemPerNode")),
            allow_accounts=_names(kv.get("AllowAccounts")), deny_accounts=_names(kv.get("DenyAccounts")) or [],
            allow_qos=_names(kv.get("AllowQos")),
        )
    for node in nodes():
        for p in node.partitions:
            if p in parts:
                parts[p].nodes.append(node)
    return parts


def pick_partition(name: str | None, parts: dict[str, Partition]) -> Partition:
    """The partition a job lands in: ``name``, or the cluster's default one."""
    if name:
        for want in name.split(","):  # sbatch takes a list; the job runs in the first that fits
            if want in parts:
                return parts[want]
        raise RequestError(
            f"hydra.launcher.partition={name}: no such partition; this cluster has: "
            f"{', '.join(sorted(parts)) or '(none)'}", ["partition"])
    default = [p for p in parts.values() if p.default]
    if not default:
        raise RequestError("hydra.launcher.partition is null and this cluster has no default "
                           f"partition; pick one of: {', '.join(sorted(parts))}", ["partition"])
    return default[0]


def _expand_hosts(spec: str) -> set[str]:
    try:
        return set(_run(["scontrol", "show", "hostnames", spec]).split())
    except SlurmUnreachable:
        return set(spec.split(","))


def _accounting_lists(kind: str) -> list[str] | None:
    """The user's accounts (``kind="account"``) or the cluster's QOS names, from sacctmgr; None if unknown."""
    if shutil.which("sacctmgr") is None:
        return None
    cmd = (["sacctmgr", "-n", "-P", "show", "assoc", f"where user={getpass.getuser()}", "format=account"]
           if kind == "account" else ["sacctmgr", "-n", "-P", "show", "qos", "format=name"])
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = sorted({ln.strip() for ln in out.stdout.splitlines() if ln.strip()})
    return names if out.returncode == 0 and names else None  # no accounting database: cannot tell


def request_problems(params: Any, part: Partition) -> list[tuple[str, str]]:
    """``(setting, why)`` for each part of the request no node of ``part`` can ever give."""
    probs: list[tuple[str, str]] = []
    nodes_ = part.nodes
    where = f"partition {part.name}"
    if not nodes_:
        return [("partition", f"{where} has no nodes")]
    cpus = getattr(params, "cpus_per_task", None) or 1
    max_cpus = max(n.cpus for n in nodes_)
    if part.max_cpus_per_node:
        max_cpus = min(max_cpus, part.max_cpus_per_node)
    if cpus > max_cpus:
        probs.append(("cpus_per_task", (f"hydra.launcher.cpus_per_task={cpus} is more than any node of {where} "
                                       f"has (at most {max_cpus} CPUs)")))
    mem_gb = getattr(params, "mem_gb", None)
    if mem_gb:
        max_mb = max(n.memory_mb for n in nodes_)
        if part.max_mem_per_node_mb:
            max_mb = min(max_mb, part.max_mem_per_node_mb)
        if mem_gb * 1024 > max_mb:
            probs.append(("mem_gb", (f"hydra.launcher.mem_gb={mem_gb:g} is more than any node of {where} "
                                    f"offers (at most {max_mb / 1024:.1f} GB)")))
    gpus = getattr(params, "gpus_per_node", None)
    if gpus:
        have = max(n.gres.get("gpu", 0) for n in nodes_)
        if have == 0:
            probs.append(("gpus_per_node", (f"hydra.launcher.gpus_per_node={gpus} but {where} has no GPUs "
                                           "(no gpu GRES on its nodes); use a GPU partition "
                                           "(hydra.launcher.partition) or drop gpus_per_node")))
        elif gpus > have:
            probs.append(("gpus_per_node", (f"hydra.launcher.gpus_per_node={gpus} is more than any node of "
                                           f"{where} has (at most {have} GPUs)")))
    gres = getattr(params, "gres", None)
    if gres:
        for item in str(gres).split(","):
            bits = item.split(":")
            count = int(bits[-1]) if bits[-1].isdigit() else 1
            key = ":".join(b for b in bits if not b.isdigit())
            have = max(n.gres.get(key, 0) for n in nodes_)
            if have < count:
                probs.append(("gres", (f"hydra.launcher.gres={gres}: no node of {where} has {count} x {key} "
                                      f"(at most {have})")))
    n_nodes = int(getattr(params, "nodes", 1) or 1)
    limit = min(x for x in (len(nodes_), part.max_nodes) if x is not None)
    if n_nodes > limit:
        probs.append(("nodes", f"hydra.launcher.nodes={n_nodes} is more than {where} allows ({limit})"))
    minutes = getattr(params, "timeout_min", None)
    if minutes and part.max_time_min is not None and minutes > part.max_time_min:
        probs.append(("timeout_min", (f"hydra.launcher.timeout_min={minutes} is above the time limit of "
                                     f"{where} ({part.max_time_min} min)")))
    constraint = getattr(params, "constraint", None)
    if constraint:
        have = set().union(*(n.features for n in nodes_))
        wanted = set(re.findall(r"[A-Za-z_][\w.\-]*", str(constraint)))
        missing = sorted(wanted - have)
        if missing:
            probs.append(("constraint", (f"hydra.launcher.constraint={constraint}: no node of {where} has "
                                        f"the feature {', '.join(missing)} (features there: "
                                        f"{', '.join(sorted(have)) or 'none'})")))
    exclude = getattr(params, "exclude", None)
    if exclude and {n.name for n in nodes_} <= _expand_hosts(str(exclude)):
        probs.append(("exclude", f"hydra.launcher.exclude={exclude} leaves no node of {where}"))
    account = getattr(params, "account", None)
    if account:
        if (part.allow_accounts is not None and account not in part.allow_accounts) \
                or account in part.deny_accounts:
            probs.append(("account", f"hydra.launcher.account={account} may not use {where}"))
        else:
            mine = _accounting_lists("account")
            if mine is not None and account not in mine:
                probs.append(("account", (f"hydra.launcher.account={account} is not one of your accounts "
                                         f"({', '.join(mine)})")))
    qos = getattr(params, "qos", None)
    if qos:
        if part.allow_qos is not None and qos not in part.allow_qos:
            probs.append(("qos", (f"hydra.launcher.qos={qos} may not use {where} "
                                 f"(allowed: {', '.join(part.allow_qos)})")))
        else:
            known = _accounting_lists("qos")
            if known is not None and qos not in known:
                probs.append(("qos", f"hydra.launcher.qos={qos}: no such QOS ({', '.join(known)})"))
    return probs


def check_request(params: Any) -> Partition:
    """Raise :class:`RequestError` (one line, naming the settings) if no node can ever run a job.

    Returns the partition the jobs will land in.
    """
    parts = partitions()
    try:
        part = pick_partition(getattr(params, "partition", None), parts)
    except RequestError as exc:
        raise RequestError(f"{exc}; nothing was submitted", exc.settings) from None
    probs = request_problems(params, part)
    if probs:
        raise RequestError(
            "SLURM could never start these jobs: " + "; ".join(why for _, why in probs)
            + f"; change {', '.join(f'hydra.launcher.{s}' for s, _ in probs)} on the command line "
            f"or in {SITE_FILE}; nothing was submitted", [s for s, _ in probs])
    return part
