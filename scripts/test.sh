#!/usr/bin/env bash
# Set up, then run the test suite offline. Extra arguments go to pytest
# (e.g. `-m "not slow"` for the fast suite only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
.venv/bin/ruff check spt_cli tests scripts
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
