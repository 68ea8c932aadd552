#!/usr/bin/env bash
# A reduced but real few-shot reproduction on a 2-core CPU with the real MiniLM backbone:
# SPT (search + retrain) against prompt tuning, deep prompts and LPT on RTE, SST-2 and MRPC
# (16 shots, LM-BFF splits), 3 seeds, then the paper-style table. About an hour on 2 cores.
#
#   bash scripts/reproduce_cpu_fewshot.sh                  # defaults below
#   TASKS=rte SEEDS=13,21,42,87,100 bash scripts/reproduce_cpu_fewshot.sh
#
# Writes everything under $OUT (default outputs/reproduce_cpu_fewshot/<time>), including
# RESULTS.md: the table with the command, date, machine and wall time.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TASKS=${TASKS:-rte,sst2,mrpc}
SEEDS=${SEEDS:-13,21,42}
BASELINES=${BASELINES:-prompt_tuning,deep_prompt,lpt}
OUT=${OUT:-outputs/reproduce_cpu_fewshot/$(date +%Y-%m-%d_%H-%M-%S)}
RUN=.venv/bin/spt-run
mkdir -p "$OUT"
start=$(date +%s)
status=0
# A failed job does not stop the others; the table lists it as failed.
$RUN search -m experiment=cpu_fewshot dataset="$TASKS" seed="$SEEDS" logger=none \
  hydra.sweep.dir="$OUT/spt" "$@" || status=1
$RUN train -m experiment=cpu_fewshot dataset="$TASKS" seed="$SEEDS" method="$BASELINES" \
  logger=none hydra.sweep.dir="$OUT/baselines" "$@" || status=1
$RUN table runs="$OUT" hydra.run.dir="$OUT/table" || status=1
wall=$(( $(date +%s) - start ))
{
  echo "# Reduced CPU few-shot reproduction"
  echo
  echo "- command: \`bash scripts/reproduce_cpu_fewshot.sh\` (TASKS=$TASKS SEEDS=$SEEDS BASELINES=$BASELINES $*)"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); wall time: $((wall / 60)) min $((wall % 60)) s"
  echo "- machine: $(nproc --all) CPU cores ($(uname -m)), $(free -g | awk '/Mem:/{print $2}') GiB RAM, no GPU;" \
       "$(.venv/bin/python -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")')"
  echo "- code: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- backbone: all-MiniLM-L6-v2 (real weights, classifier head); experiment=cpu_fewshot"
  echo
  cat "$OUT/table/table.md" 2>/dev/null || echo "(no table: see the errors above)"
} > "$OUT/RESULTS.md"
echo "wrote $OUT/RESULTS.md (wall time ${wall}s)"
exit $status
