#!/usr/bin/env bash
# Regime (b) of the headroom study (docs/search.md): MPNet (12 blocks, candidates 1..11, K = 4:
# 330 subsets) at 16 shots. Per task-seed: one SPT-DARTS search (its selection only; the
# controls retrain it), then `spt-run controls` retrains a seeded sample of 20 subsets plus the
# last K, the middle K and the searched set. One torch thread; resumable (a finished search is
# kept, a rerun retrains only the sets a record lacks). Needs the MPNet weights:
#   SPT_MODELS=mpnet bash scripts/setup.sh
#   SEEDS="13" nohup bash scripts/headroom_mpnet.sh > headroom_b_13.log 2>&1 &
# One task-seed's retrains on both cores: start SHARDS=2 SHARD=0 and SHARDS=2 SHARD=1 (same
# SEEDS and TASKS); shard 0 runs the searches, the other shards wait for each search's result.
# Records: results/controls/mpnet/16shot/ (controls), results/searches/mpnet/ (searches).
set -uo pipefail
cd "$(dirname "$0")/.."
COMMON=(model=mpnet experiment=cpu_fewshot logger=none trainer.num_threads=1
        lower_cache_dir=outputs/lower_states)
SHARDING=(controls.shards="${SHARDS:-1}" controls.shard="${SHARD:-0}")
for seed in ${SEEDS:-13 21 42}; do
  for task in ${TASKS:-sst2 trec cr}; do
    run=outputs/headroom_mpnet/search/$task-$seed
    if [ "${SHARD:-0}" != 0 ]; then
      # Shard 0 searches; a failed search leaves $run.failed and the controls go on without it.
      while [ ! -f "$run/selected_layers.json" ] && [ ! -f "$run.failed" ]; do sleep 30; done
    elif [ ! -f "$run/selected_layers.json" ]; then
      rm -rf "$run" "$run.failed"
      .venv/bin/spt-run search "${COMMON[@]}" dataset="$task" seed="$seed" retrain=false \
        records=results/searches/mpnet hydra.run.dir="$run" \
        || { echo "FAILED: search $task $seed"; touch "$run.failed"; }
    fi
    from=()
    [ -f "$run/selected_layers.json" ] && from=(from_search="$run")
    .venv/bin/spt-run controls "${COMMON[@]}" dataset="$task" seed="$seed" "${from[@]}" \
      "${SHARDING[@]}" controls.records=results/controls || echo "FAILED: controls $task $seed"
  done
done
