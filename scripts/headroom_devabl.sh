#!/usr/bin/env bash
# Searches rerun with search.dev_ablation=true (each candidate's ablation on dev beside the one on
# D_alpha; it selects nothing), gates only (retrain=false), one torch thread. `python
# scripts/headroom.py report` ranks "ablation on dev" against the subsets (docs/search.md).
#   MODEL=minilm (default): the few-shot table's SPT-DARTS searches (MiniLM, 16 shots,
#     experiment=grid_fewshot_spt at results/fewshot/choices.json's learning rate) at their own
#     seed -> results/searches/minilm_devabl/
#   MODEL=mpnet: regime (b)'s searches (scripts/headroom_mpnet.sh) under other search seeds
#     (SEARCH_SEEDS, default 1; they also count as multi-seed gates) -> results/searches/mpnet_seeds/
# A sweep (-m) skips the jobs whose records exist: a rerun continues where this one stopped.
# Two queues: split SEEDS, e.g.
#   MODEL=mpnet SEEDS="13 21" nohup bash scripts/headroom_devabl.sh > devabl_a.log 2>&1 &
#   MODEL=mpnet SEEDS="42"    nohup bash scripts/headroom_devabl.sh > devabl_b.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
case "${MODEL:-minilm}" in
  minilm)
    LR=$(.venv/bin/python -c "import json; print(json.load(open('results/fewshot/choices.json'))['spt']['setting'][0])")
    ARGS=(experiment=grid_fewshot_spt method=spt "$LR" records=results/searches/minilm_devabl)
    TASKS=${TASKS:-sst2,mr,mpqa,subj,trec}
    SEEDS=${SEEDS:-13 21 42 87 100}
    AGAIN=() ;;
  mpnet)
    ARGS=(model=mpnet experiment=cpu_fewshot lower_cache_dir=outputs/lower_states
          records=results/searches/mpnet_seeds)
    TASKS=${TASKS:-sst2,trec,cr}
    SEEDS=${SEEDS:-13 21 42}
    AGAIN=(search.seed="${SEARCH_SEEDS:-1}") ;;
  *) echo "headroom_devabl.sh: MODEL must be minilm or mpnet, not ${MODEL}" >&2; exit 2 ;;
esac
for seed in $SEEDS; do
  .venv/bin/spt-run search "${ARGS[@]}" logger=none trainer.num_threads=1 retrain=false \
    search.dev_ablation=true -m dataset="$TASKS" seed="$seed" "${AGAIN[@]}" \
    || echo "FAILED: searches of seed $seed"
done
