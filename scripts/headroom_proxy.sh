#!/usr/bin/env bash
# Short retrains ("proxies") of the subsets the headroom study retrained in full (docs/search.md,
# "Where a selection could win"): the same `spt-run controls` with trainer.max_steps cut to
# STEPS (one dev evaluation, at the end), records in results/proxies/steps<STEPS>/. They score
# a proxy signal and a two-rung successive-halving rule in `python scripts/headroom.py report`.
# MiniLM at 16 shots by default (10 subsets per task-seed, a few seconds each); one torch thread;
# resumable (a rerun retrains only the sets a record lacks). Two queues: split SEEDS.
#   SEEDS="13 21 42" nohup bash scripts/headroom_proxy.sh > proxy_a.log 2>&1 &
#   SEEDS="87 100"   nohup bash scripts/headroom_proxy.sh > proxy_b.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-25}
for seed in ${SEEDS:-13 21 42 87 100}; do
  for task in ${TASKS:-sst2 mr mpqa subj trec}; do
    .venv/bin/spt-run controls ${EXPERIMENT:-experiment=cpu_fewshot} logger=none \
      trainer.num_threads=1 lower_cache_dir=outputs/lower_states dataset="$task" seed="$seed" \
      trainer.max_steps="$STEPS" trainer.eval_every="$STEPS" trainer.checkpoint_every="$STEPS" \
      controls.records="results/proxies/steps$STEPS" \
      || echo "FAILED: proxy $task $seed"
  done
done
