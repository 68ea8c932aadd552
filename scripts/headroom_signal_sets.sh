#!/usr/bin/env bash
# Retrain the sets a regime's signal rules pick but its controls lack (the ablation on dev's
# top K, the gates averaged over search seeds' top K: `python scripts/headroom.py sets BLOCK`),
# with the regime's own controls protocol, so `python scripts/headroom.py report` can score
# those rules. Regime (b), MPNet 16 shots, by default; one torch thread; resumable (a rerun
# retrains only the sets a record lacks). Two queues: QUEUES=2 QUEUE=0 and QUEUE=1.
#   QUEUES=2 QUEUE=0 nohup bash scripts/headroom_signal_sets.sh > sets_0.log 2>&1 &
#   QUEUES=2 QUEUE=1 nohup bash scripts/headroom_signal_sets.sh > sets_1.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
COMMON=(model=mpnet experiment=cpu_fewshot logger=none trainer.num_threads=1
        lower_cache_dir=outputs/lower_states controls.records=results/controls)
i=0
.venv/bin/python scripts/headroom.py sets "${BLOCK:-headroom-b}" | while read -r task seed sets; do
  if [ $((i % ${QUEUES:-1})) = "${QUEUE:-0}" ]; then
    .venv/bin/spt-run controls "${COMMON[@]}" dataset="$task" seed="$seed" \
      "controls.sets=$sets" || echo "FAILED: controls $task $seed"
  fi
  i=$((i + 1))
done
