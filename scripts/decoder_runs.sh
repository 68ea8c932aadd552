#!/usr/bin/env bash
# The real decoder path (docs/search.md): SmolLM2-135M (Llama family, 30 blocks, its own LM
# head as the verbalizer) at 16 shots on SST-2, one seed: an SPT-DARTS search with its retrain,
# and LPT. One torch thread; records in results/decoder/ (commit them). Needs the weights:
#   SPT_MODELS=smollm2 bash scripts/setup.sh
#   nohup bash scripts/decoder_runs.sh > decoder.log 2>&1 &
# A finished run is not rerun (its record is kept; delete it to rerun).
set -uo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-13}
TASK=${TASK:-sst2}
COMMON=(model=smollm2 experiment=cpu_fewshot logger=none trainer.num_threads=1
        dataset="$TASK" seed="$SEED" records=results/decoder lower_cache_dir=outputs/lower_states)
done_already() { ls results/decoder/"$TASK"/"$1"/"$2"-16shot-seed"$SEED"-*.json >/dev/null 2>&1; }
done_already spt search || .venv/bin/spt-run search "${COMMON[@]}" \
  hydra.run.dir=outputs/decoder/search-"$TASK"-"$SEED" || echo "FAILED: search"
done_already lpt train || .venv/bin/spt-run train method=lpt "${COMMON[@]}" \
  hydra.run.dir=outputs/decoder/lpt-"$TASK"-"$SEED" || echo "FAILED: lpt"
