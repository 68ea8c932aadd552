#!/usr/bin/env bash
# Regime (a) of the headroom study (docs/search.md): MiniLM at full data (the full-data table's
# cap, experiment=cpu_fulldata), every C(5,2) = 10 layer subset retrained by `spt-run controls`
# on SST-2, MR, MPQA, Subj, TREC and CR x seeds 13 and 21. One torch thread; resumable (a
# rerun retrains only the subsets its record lacks). Records: results/controls/minilm/0shot/.
#   nohup bash scripts/headroom_fulldata.sh > headroom_a.log 2>&1 &
# RECORDS=DIR puts the records elsewhere (e.g. the main checkout when this runs from a copy).
set -uo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-results/controls}
for seed in ${SEEDS:-13 21}; do
  for task in ${TASKS:-cr sst2 mr mpqa subj trec}; do
    .venv/bin/spt-run controls experiment=cpu_fulldata dataset="$task" seed="$seed" \
      logger=none trainer.num_threads=1 lower_cache_dir=outputs/lower_states \
      controls.records="$RECORDS" || echo "FAILED: $task seed $seed"
  done
done
