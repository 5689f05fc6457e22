"""How many threads the compiled kernels use: the cores that are actually free, not every core.

numba's parallel loops and torch's intra-op pool each start one thread per core. On a machine busy
with other work (or with several stainlab workers) that oversubscribes the cores and a run slows
several-fold. :func:`free_cores` counts the cores this process may use less the load already on them;
:func:`limit_threads` sizes numba and torch to a number (the ``--threads`` option, or the free cores).
"""

from __future__ import annotations

import os
import sys


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores() -> int:
    """Usable cores less the one-minute load average of the machine, at least one."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(usable_cores(), round(usable_cores() - load)))


def limit_threads(threads: int) -> int:
    """Use at most ``threads`` threads in numba's parallel loops and torch's operators; returns it."""
    import numba

    threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:  # torch reads it when it is first imported
        os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
