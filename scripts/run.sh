#!/usr/bin/env bash
# The main job on the embedded defaults: set up, then SPT-DARTS search + retrain on RTE 16-shot
# with the real MiniLM backbone (offline). Extra arguments are passed to spt-run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
exec .venv/bin/spt-run search dataset=rte shots=16 "$@"
