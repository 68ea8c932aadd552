#!/usr/bin/env bash
# The few-shot table's SPT-DARTS searches (MiniLM, 16 shots: experiment=grid_fewshot_spt at the
# grid's chosen learning rate, results/fewshot/choices.json) repeated under other search seeds
# (search.seed: init, D_w/D_alpha split and batch order; the few-shot data stays the seed's), gates
# only (retrain=false), records in results/searches/minilm_seeds/. `python scripts/headroom.py
# report` averages each task-seed's gates over the table's search and these ("multi-seed gates",
# docs/search.md). One torch thread.
# Two queues: split SEEDS.
#   SEEDS="13 21 42" nohup bash scripts/headroom_seeds.sh > seeds_a.log 2>&1 &
#   SEEDS="87 100"   nohup bash scripts/headroom_seeds.sh > seeds_b.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
LR=$(.venv/bin/python -c "import json; print(json.load(open('results/fewshot/choices.json'))['spt']['setting'][0])")
TASKS=${TASKS:-sst2,mr,mpqa,subj,trec}
for seed in ${SEEDS:-13 21 42 87 100}; do
  # A sweep (-m) skips the jobs whose records exist: a rerun continues where this one stopped.
  .venv/bin/spt-run search experiment=grid_fewshot_spt logger=none method=spt "$LR" \
    retrain=false records=results/searches/minilm_seeds -m dataset="$TASKS" seed="$seed" \
    search.seed="${SEARCH_SEEDS:-1,2}" || echo "FAILED: searches of seed $seed"
done
