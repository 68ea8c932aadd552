"""spt-cli: Selective Prompt Tuning (SPT) and SPT-DARTS, with prompt-tuning baselines."""

import os


def _omp_wait_policy() -> None:
    """OMP_WAIT_POLICY=PASSIVE when other work already fills the CPUs at start-up.

    OpenMP threads that finish a parallel region early spin, waiting for their peers. When
    another process holds a core, the spinning thread keeps the core its descheduled peer
    needs. Measured on 2 cores, 2 threads: with one fully busy neighbour a first-order MiniLM
    search step took 2.6 s (default policy) vs 1.5 s (PASSIVE), and a prompt-tuning step at
    load 2.7 took 4.3 s vs 1.6 s; with a part-time neighbour (load 1.2-1.9) the default
    policy won (0.85 s vs 1.18 s per search step; `spt-run search dataset=rte shots=16` in
    135 s vs 179 s). So sleep instead of spinning only when the 1-minute load reaches the
    number of cores. Read once when torch loads OpenMP: it only acts when spt_cli is imported
    before torch (as `spt-run` does). An OMP_WAIT_POLICY already in the environment wins;
    the numbers a run computes do not depend on it.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    try:
        load = os.getloadavg()[0]
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no load average (Windows)
        return
    if load >= cores:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


_omp_wait_policy()

__version__ = "0.1.0"
