#!/usr/bin/env bash
# Run every benchmark; figures go to stdout, bench/results/*.json and bench/results/run_all.log.
#   bash bench/run_all.sh            # everything (makes bench/.venv-peers on first use)
#   NO_PEERS=1 bash bench/run_all.sh # skip the peer libraries (no package index needed)
# The machine is shared: check `uptime` first and prefer a quiet moment.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
LOG=bench/results/run_all.log
PY="${PYTHON:-python}"
PEERS=()
if [ -n "${NO_PEERS:-}" ]; then PEERS=(--no-peers); else bash bench/setup_peers.sh; fi
fail=0
run() {  # run NAME CMD...: keep going when one benchmark fails, report at the end
  local name=$1; shift
  echo "=== $name: $*  ($(date -u '+%F %T UTC'), load $(cut -d' ' -f1 /proc/loadavg))"
  if ! "$@"; then echo "!!! $name failed"; fail=1; fi
}
{
  echo "# run_all $(date -u '+%F %T UTC') on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  run capture "$PY" bench/bench_capture.py "${PEERS[@]}"
  [ -f bench/capture_overhead.py ] && run capture_extract_path "$PY" bench/capture_overhead.py
  run steer "$PY" bench/bench_steer.py "${PEERS[@]}"
  run sweep "$PY" bench/bench_sweep.py
  if [ -z "${NO_PEERS:-}" ]; then run extraction_math "$PY" bench/bench_extraction_math.py; fi
  run cli "$PY" bench/bench_cli.py --importtime
  run chat "$PY" bench/bench_chat.py --json bench/results/chat.json
  [ -f bench/bench_infer_memory.py ] && run infer_memory "$PY" bench/bench_infer_memory.py --json bench/results/infer_memory.json
  if [ -f bench/bench_slurm_submit.py ]; then
    if command -v sbatch >/dev/null; then run slurm_submit "$PY" bench/bench_slurm_submit.py
    else echo "=== slurm_submit skipped: no sbatch (run launchers/slurm/up.sh first)"; fi
  fi
  exit $fail
} 2>&1 | grep --line-buffered -v '^Loading weights' | tee "$LOG"
exit "${PIPESTATUS[0]}"
