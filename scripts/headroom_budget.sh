#!/usr/bin/env bash
# A regime's sets at another budget K (docs/search.md, headroom): per task-seed, the K-sets the
# product's rule compares (the last K, the middle K, and the search's own rule at K,
# re-derived from its committed record's gates and ablation scores, which do not depend on K:
# `controls from_search=<record>`), so no search reruns. No sample (controls.max_subsets=0):
# scripts/headroom.py ranks them against the regime's sample at its own K. One torch thread;
# resumable (a rerun retrains only the sets a record lacks).
#   nohup bash scripts/headroom_budget.sh > budget.log 2>&1 &      # (b): MPNet, K = 2
#   MODEL=minilm SEARCHES=results/fewshot TASKS="sst2 mr mpqa subj trec" \
#     SEEDS="13 21 42 87 100" K=1 nohup bash scripts/headroom_budget.sh > budget.log 2>&1 &
# (b) needs the MPNet weights (SPT_MODELS=mpnet bash scripts/setup.sh) and the searches of
# headroom_mpnet.sh; (0) the few-shot table's searches. On both cores: QUEUES=2 QUEUE=0 and
# QUEUES=2 QUEUE=1 take every other task-seed. Records: results/controls_k<K>/<model>/16shot/.
set -uo pipefail
cd "$(dirname "$0")/.."
K=${K:-2}
MODEL=${MODEL:-mpnet}
SEARCHES=${SEARCHES:-results/searches/mpnet}
COMMON=(model="$MODEL" experiment=cpu_fewshot logger=none trainer.num_threads=1
        lower_cache_dir=outputs/lower_states)
i=0
for seed in ${SEEDS:-13 21 42}; do
  for task in ${TASKS:-sst2 trec cr}; do
    mine=$(( i % ${QUEUES:-1} == ${QUEUE:-0} )); i=$((i + 1))
    [ "$mine" = 1 ] || continue
    search=$(ls "$SEARCHES/$task"/spt/search-16shot-seed"$seed"-*.json 2>/dev/null | tail -1)
    if [ -z "$search" ]; then echo "SKIPPED: no search record of $task seed $seed"; continue; fi
    .venv/bin/spt-run controls "${COMMON[@]}" dataset="$task" seed="$seed" search.budget="$K" \
      controls.max_subsets=0 from_search="$search" controls.records=results/controls_k"$K" \
      || echo "FAILED: controls $task $seed"
  done
done
