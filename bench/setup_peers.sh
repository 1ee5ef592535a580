#!/usr/bin/env bash
# Make bench/.venv-peers with the peer libraries at pinned versions (never the project env).
#
# The peer venv reuses the project environment's torch, so setup downloads only the peers
# (and their small pure-Python pins): a .pth file puts every site-packages directory the project's interpreter
# sees on the peer venv's path (a venv's own site-packages included; --system-site-packages
# would only show the *base* interpreter's, and pip would then fetch a 5 GB CUDA torch), and
# a constraints file pins torch to the installed version, so a peer that wants another
# fails loudly instead of downloading one (transformers may differ: steering-vectors pins <5,
# and pip puts that small wheel into the peer venv only).
#
#   bash bench/setup_peers.sh             # PYTHON=... picks the project interpreter (default: python)
#   bash bench/setup_peers.sh --dry-run   # show what pip would install, install nothing
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${PEERS_VENV:-$HERE/.venv-peers}"
PY="${PYTHON:-python}"
NNSIGHT_VERSION="${NNSIGHT_VERSION:-0.8.1}"
STEERING_VECTORS_VERSION="${STEERING_VECTORS_VERSION:-0.12.2}"
DRY=()
[ "${1:-}" = "--dry-run" ] && DRY=(--dry-run)

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$PY" - > "$SITE/_trait_pipeline_project_env.pth" <<'PY'
import os, sys
# the project interpreter's package dirs, in its order (after the peer venv's own)
for p in sys.path:
    if p and os.path.isdir(p) and os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages"):
        print(p)
PY
CONSTRAINTS="$VENV/project-constraints.txt"
"$PY" - > "$CONSTRAINTS" <<'PY'
import importlib.metadata as md
for name in ("torch",):  # transformers may differ: steering-vectors pins <5
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
PY
if [ ${#DRY[@]} -gt 0 ] || ! "$VENV/bin/python" -c "import nnsight, steering_vectors" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "${DRY[@]}" -c "$CONSTRAINTS" \
    "nnsight==$NNSIGHT_VERSION" "steering-vectors==$STEERING_VECTORS_VERSION"
fi
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch
for name in ("nnsight", "steering-vectors", "torch", "transformers"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
print("torch from", torch.__file__)
PY
