#!/usr/bin/env bash
# The GPU check (< 8 minutes on one GPU machine with torch, transformers and peft, no network).
#   bash bench/gpu_check.sh [--out DIR] [--cpu-smoke]
# Run from the repository root. Parts, each in its own time box, each writing DIR/<part>.json:
#   demo   the demo pipeline (extract -> steer -> infer) on CUDA and on CPU, same seed, compared
#   bench  capture / steering / L x K sweep overheads on a random Llama-3-8B-shaped bf16 model
#   extras the sweep's batched-vs-loop agreement in fp32 and bf16, steering timed interleaved,
#          and out-of-memory halving under a capped share of the GPU
# then DIR/gpu_check.json merges them (written even when a part failed or timed out).
# Missing pure-python wheels may be carried in .whl/: they are installed into /tmp/site.
set -euo pipefail

OUT=bench/results
SMOKE=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    --cpu-smoke) SMOKE=(--cpu-smoke); shift ;;
    *) echo "error: unknown argument $1 (expected --out DIR or --cpu-smoke)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
if [[ -d .whl ]] && compgen -G ".whl/*.whl" > /dev/null; then
  echo "[gpu_check] installing carried wheels from .whl/ into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export TRAIT_PIPELINE_CACHE="${TRAIT_PIPELINE_CACHE:-$PWD/.cache}"
export TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false

part() {  # part NAME SECONDS: run one part in its time box; a failure does not stop the rest
  local name="$1" limit="$2" rc=0
  echo "[gpu_check] == part $name (time box ${limit}s)"
  timeout --kill-after=10 "$limit" python3 bench/gpu_check.py --part "$name" --out "$OUT" \
    ${SMOKE[@]+"${SMOKE[@]}"} || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "[gpu_check] part $name ended with status $rc"
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
      printf '{"status": "timed out", "limit_s": %s}\n' "$limit" > "$OUT/$name.json"
    fi
  fi
}

if [[ ${#SMOKE[@]} -gt 0 ]]; then
  part bench 300     # seconds on a quiet CPU; the boxes leave room for a loaded CI machine
  part demo 600
  part extras 300
else
  part demo 270      # includes building the demo family when .cache/ was not carried
  part bench 180
  part extras 150
fi
python3 bench/gpu_check.py --part summary --out "$OUT" ${SMOKE[@]+"${SMOKE[@]}"} || true
echo "[gpu_check] done: $OUT/gpu_check.json"
