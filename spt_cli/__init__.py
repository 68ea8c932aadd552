"""spt-cli: Selective Prompt Tuning (SPT) and SPT-DARTS, with prompt-tuning baselines."""

import os


def _omp_wait_policy() -> None:
    """OMP_WAIT_POLICY=PASSIVE when the CPUs are already busy at start-up (issue 6).

    OpenMP threads that finish a parallel region early spin, waiting for their peers. When
    another process holds a core, the spinning thread keeps the core its descheduled peer
    needs. Measured on 2 cores (a first-order MiniLM search step, 2 threads): with one other
    busy process, 2.6 s (default policy) vs 1.5 s (PASSIVE); on a quiet machine, 0.85 s vs
    1.18 s. So sleep instead of spinning only when the 1-minute load already fills 3/4 of the
    cores. Read once when torch loads OpenMP: it only acts when spt_cli is imported before
    torch (as `spt-run` does). An OMP_WAIT_POLICY already in the environment wins; numbers
    do not depend on it.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    try:
        load = os.getloadavg()[0]
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no load average (Windows)
        return
    if load >= 0.75 * cores:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


_omp_wait_policy()

__version__ = "0.1.0"
