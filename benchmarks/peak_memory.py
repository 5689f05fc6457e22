"""A benchmark process's own peak resident memory, shared by the benchmarks that report it."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far.

    Read from ``VmHWM`` in /proc/self/status: on Linux ``getrusage().ru_maxrss`` carries the parent's
    peak over into a child across fork + exec, so a subprocess started by a large benchmark process
    would report the parent's figure (a bare child of a process holding 900 MiB read 925 MiB there,
    10 MiB in ``VmHWM``). ``ru_maxrss`` (KiB) is the fallback where /proc is absent.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> None:
    """Start :func:`peak_rss_bytes` over from the memory resident now (Linux: ``5`` written to
    /proc/self/clear_refs), so that a peak taken after warming up is the timed work's, not the warm-up's.
    Where that file cannot be written the peak stays the process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
