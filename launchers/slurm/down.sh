#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by up.sh (by the daemons' pid files; munged last).
set -uo pipefail
stop() {  # name pidfile
  if [ -s "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null; then
    kill "$(cat "$2")" && echo "slurm-down: stopped $1"
    for _ in $(seq 50); do kill -0 "$(cat "$2" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
  fi
}
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop munged /run/munge/munged.pid
exit 0
