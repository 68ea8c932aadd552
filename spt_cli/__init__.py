"""spt-cli: Selective Prompt Tuning (SPT) and SPT-DARTS, with prompt-tuning baselines."""

import os

# OpenMP threads that finish a parallel region early sleep instead of spinning. On small CPUs
# shared with other processes, a spinning thread holds the core its straggling peer needs:
# measured on 2 cores with one other busy process, a MiniLM train step took 4.3 s with the
# default policy and 1.4-1.7 s with PASSIVE (issue 6). Read once when torch loads OpenMP, so
# it only acts when spt_cli is imported before torch (as `spt-run` does); an explicit
# OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
