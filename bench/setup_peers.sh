#!/usr/bin/env bash
# Make bench/.venv-peers with the peer libraries at pinned versions (never the project env).
# --system-site-packages reuses the project's torch/transformers instead of downloading them;
# pip installs a peer's own pins into the venv only where they differ.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="$HERE/.venv-peers"
PY="${PYTHON:-python}"
NNSIGHT_VERSION="${NNSIGHT_VERSION:-0.8.1}"
STEERING_VECTORS_VERSION="${STEERING_VECTORS_VERSION:-0.12.2}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c "import nnsight, steering_vectors" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "nnsight==$NNSIGHT_VERSION" "steering-vectors==$STEERING_VECTORS_VERSION"
fi
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("nnsight", "steering-vectors", "torch", "transformers"):
    print(f"{name}=={md.version(name)}")
PY
