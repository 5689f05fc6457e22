"""How many threads the compiled kernels use: the cores that are actually free, not every core.

numba's parallel loops and torch's intra-op pool each start one thread per core. On a machine busy
with other work (or with several stainlab workers) that oversubscribes the cores and a run slows
several-fold. :func:`free_cores` counts the cores this process may use less the load already on them;
:func:`limit_threads` sizes numba and torch to a number (the ``--threads`` option, or the free cores).
Load that comes after start-up is followed by :func:`spare_cores`, which the pixel kernels ask before
they wake numba's threads.
"""

from __future__ import annotations

import os
import sys
import time

SPARE_PERIOD = 0.25
"""Seconds between two looks at the machine's load in :func:`spare_cores`."""


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


def serial_kernel_pool(threads: int):
    """A thread pool whose threads each run numba's kernels serially (``numba.set_num_threads(1)`` in
    each): for work split by image or by tile, where numba's own threads would oversubscribe the cores
    (and waking them costs milliseconds a kernel on a busy machine)."""
    from concurrent.futures import ThreadPoolExecutor

    import numba

    return ThreadPoolExecutor(threads, initializer=numba.set_num_threads, initargs=(1,))


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


def spare_cores() -> int:
    """This process's usable cores that other processes did not keep busy lately (at least one): the
    busy time of those cores in ``/proc/stat`` less this process's own CPU time, over the time since the
    previous look, looked at most every ``SPARE_PERIOD`` seconds. Where the system does not tell
    (no ``/proc/stat``), all usable cores.

    A 256 x 256 tile's kernels on two threads took 1.55 ms on an idle two-core machine and 3.6-8 ms with
    another process spinning on one core (the join waits for the thread the system put aside), against
    2.0 and 2.35 ms on one thread; so a kernel runs on the spare cores only."""
    global _last
    now = time.monotonic()
    if now - _last[0] < SPARE_PERIOD:
        return _last[3]
    busy, own = _busy_seconds(), _own_seconds()
    if busy is None:
        spare = usable_cores()
    else:
        others = max(0.0, (busy - _last[1]) - (own - _last[2])) / max(now - _last[0], 1e-9)
        spare = max(1, min(usable_cores(), round(usable_cores() - others)))
    _last = (now, busy, own, spare)     # one tuple: a reader on another thread sees one look whole
    return spare


def _busy_seconds() -> float | None:
    """Seconds the cores this process may use have been busy since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat", "rb") as stat:
            lines = stat.read().split(b"\n")
        cores = os.sched_getaffinity(0)
        ticks = 0
        for line in lines[1:]:
            if not line.startswith(b"cpu"):
                break
            name, *fields = line.split()
            if int(name[3:]) in cores:
                values = [int(v) for v in fields[:8]]
                ticks += sum(values) - values[3] - values[4]        # all but idle and iowait
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError, IndexError):
        return None


def _own_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


_last = (-1e9, _busy_seconds(), _own_seconds(), usable_cores())
