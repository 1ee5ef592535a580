#!/usr/bin/env bash
# Stand up a one-node SLURM cluster on this machine: munge + slurmctld + slurmd from Debian's
# slurm-wlm, configured for the machine it runs on. For development and CI only (root, no
# accounting database, no cgroups). Idempotent: a second run finds the node up and does nothing.
#
#   bash launchers/slurm/up.sh      # as root (or: sudo bash ...); then sinfo, sbatch,
#                                   # python -m trait_pipeline.steer -m hydra/launcher=slurm ...
#   bash launchers/slurm/down.sh    # as root: stops the daemons this script started
#
# Environment: SLURM_PARTITION (default debug), SLURM_MEM_HEADROOM_MB (default 1024),
# SLURM_UP_TIMEOUT_S (default 60).
set -euo pipefail

PARTITION="${SLURM_PARTITION:-debug}"
HEADROOM_MB="${SLURM_MEM_HEADROOM_MB:-1024}"
TIMEOUT_S="${SLURM_UP_TIMEOUT_S:-60}"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
NODE="$(hostname -s)"
start_s=$(date +%s.%N)

say() { echo "slurm-up: $*"; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start_s" "$(date +%s.%N)"; }
node_ready() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'; }

if [ "$(id -u)" != 0 ]; then
  echo "slurm-up: error: needs root (it installs packages and starts system daemons); run it in a root shell, or with sudo where there is one" >&2
  exit 2
fi

# the slurm.conf this machine gets -------------------------------------------------------------
cpus="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"   # nproc alone obeys OMP_NUM_THREADS
mem_total_mb="$(free -m | awk '/^Mem:/ {print $2}')"
real_mem_mb=$(( mem_total_mb > HEADROOM_MB * 2 ? mem_total_mb - HEADROOM_MB : mem_total_mb / 2 ))
conf_text="# Written by launchers/slurm/up.sh for this machine; rerun it rather than editing by hand.
ClusterName=trait-pipeline
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
# no cgroups in containers and CI VMs: track processes by parent pid, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# no accounting database: job state comes from squeue/scontrol, kept an hour after a job ends
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
ReturnToService=2
JobRequeue=1
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MaxArraySize=10001
# a requeued job may start again cred_expire seconds after it stopped (SLURM's default: 120),
# and the scheduler looks at pending jobs every few seconds (default: 60, backfill 30): a
# one-node test cluster need not make a preempted job wait minutes to rerun
AuthInfo=cred_expire=20
SchedulerParameters=sched_interval=5,bf_interval=5
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_mem_mb} State=UNKNOWN
# a time limit like a real cluster's, so a request above it is seen (and refused) as there
PartitionName=${PARTITION} Nodes=${NODE} Default=YES MaxTime=1-00:00:00 DefaultTime=01:00:00 State=UP OverSubscribe=NO
"
conf_current() { [ -f "$CONF_DIR/slurm.conf" ] && [ "$(cat "$CONF_DIR/slurm.conf")" = "${conf_text%$'\n'}" ]; }

if command -v sinfo >/dev/null && conf_current && node_ready; then
  say "already up (node $NODE, partition $PARTITION)"
  exit 0
fi

# 1. packages ------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  # the package scripts try to start services; there is no init system to do that here
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt_opts=(-qq -o DPkg::Lock::Timeout=600)   # another apt-get may hold the lock for a while
  apt-get "${apt_opts[@]}" update
  apt-get "${apt_opts[@]}" install -y --no-install-recommends slurm-wlm munge >/dev/null
fi

# 2. munge (authentication between the daemons and the client commands) ----------------------
if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
  else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# 3. slurm.conf for this machine (text computed above) ----------------------------------------
install -d "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
if ! conf_current; then
  printf '%s' "$conf_text" > "$CONF_DIR/slurm.conf"
  say "wrote $CONF_DIR/slurm.conf (node $NODE: $cpus CPUs, ${real_mem_mb} MB)"
  conf_changed=1
fi

# 4. daemons --------------------------------------------------------------------------------
alive() { [ -s "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }
if [ -n "${conf_changed:-}" ] && { alive /run/slurmctld.pid || alive /run/slurmd.pid; }; then
  # AuthInfo and SchedulerParameters are read at start: restart rather than reconfigure
  say "restarting the daemons for the new slurm.conf"
  for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    if alive "$pidfile"; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      for _ in $(seq 100); do alive "$pidfile" || break; sleep 0.1; done
    fi
  done
fi
if ! alive /run/slurmctld.pid; then say "starting slurmctld"; slurmctld; fi
if ! alive /run/slurmd.pid; then say "starting slurmd"; slurmd; fi

deadline=$(( $(date +%s) + TIMEOUT_S ))
until node_ready; do
  state="$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null || true)"
  case "$state" in
    down*|drain*|fail*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "slurm-up: error: node $NODE not idle after ${TIMEOUT_S}s (state: ${state:-none}); see $LOG_DIR/" >&2
    exit 1
  fi
  sleep 0.5
done
say "up in $(elapsed)s: partition $PARTITION, node $NODE ($(sinfo -h -N -n "$NODE" -o '%c CPUs, %m MB, %T'))"
