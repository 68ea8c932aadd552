"""The full-data comparison of docs/results.md: MiniLM-L6, full training sets, capped steps.

    python scripts/fulldata_table.py table [METHOD ...] [--seeds 13] [--tasks rte,mrpc]
    python scripts/fulldata_table.py report              # spt-run table -> results/fulldata/table

What is cut to fit a 4-hour budget on the 2-core machine, and why:
- tasks: the eight with a full labelled training split and a labelled test set here (SST-2,
  MR, MPQA, Subj, TREC, MRPC, RTE, CR; MNLI, QNLI and QQP have no local training split);
- training capped at ``experiment=cpu_fulldata``'s 300 steps of batch 16 (4,800 examples: about
  two epochs of RTE and MRPC, under one of SST-2), dev capped at 1,000 examples;
- one seed (13) unless ``--seeds`` asks for more;
- no learning-rate grid of its own: each method runs at the setting chosen on dev by the
  few-shot grid (results/fewshot/choices.json), the same protocol for every method;
- no fine-tuning row (a backbone step costs several prompt steps; it is the first thing to add
  with more time).

Records go to results/fulldata/ (one JSON per run, committed); rerunning skips what is recorded.
"""

from __future__ import annotations

import argparse
import sys

from fewshot_table import REPO, report, run_chosen, seed_list

FULL = REPO / "results" / "fulldata"
TASKS = ("sst2", "mr", "mpqa", "subj", "trec", "mrpc", "rte", "cr")
METHODS = ("head_only", "prompt_tuning", "deep_prompt", "ptuning_v2", "lpt", "random_layers",
           "spt")  # fmt: skip
COMMON = ["experiment=cpu_fulldata", "logger=none", "trainer.num_threads=1",
          "lower_cache_dir=outputs/lower_states"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("table")
    p.add_argument("methods", nargs="*", choices=METHODS)
    p.add_argument("--seeds", type=seed_list, default=[13])
    p.add_argument("--tasks", type=lambda s: s.split(","), default=TASKS)
    sub.add_parser("report")
    opts = parser.parse_args()
    if opts.cmd == "report":
        return report(FULL)
    return run_chosen(opts.methods or METHODS, opts.tasks, opts.seeds, FULL, common=COMMON)


if __name__ == "__main__":
    sys.exit(main())
