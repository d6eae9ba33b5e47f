"""CPU seconds of this process and its whole tree of descendants.

Wall time on a shared machine swings with the load other programs put on it; the CPU
time the run itself spent does not, so every table reports it beside the wall time.
It also shows what wall time hides: a runner that reaches the same wall time by
spinning, polling or pickling more costs more CPU.

A sample adds, over this process and every living descendant, the CPU time of the
process (all its threads, living or ended) and of the children it has already
reaped, so a worker that exited between two samples still counts, in its parent's
reaped total. On Linux each process's own time is read from its CPU clock in
nanoseconds: the 10 ms ticks of ``/proc/PID/stat`` are too coarse for a 50 ms map
of eight processes. A process the workload does not own (the CPU hog of (h)) is
left out by pid, with its subtree. Without psutil (an optional bench dependency),
which lists the descendants, there is no sample and the tables print "-".
"""

from __future__ import annotations

import resource
import time
from collections.abc import Collection
from contextlib import suppress
from typing import Any

__all__ = ["tree_cpu"]

_sampling = 0.0  # CPU seconds this process spent taking the samples so far


def tree_cpu(skip: Collection[int] = ()) -> float | None:
    """CPU seconds (user + system) of this process tree so far; None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    global _sampling
    started, total = time.process_time(), 0.0
    for proc in psutil.Process().children(recursive=True):
        if proc.pid in skip or _below(proc, skip):
            continue
        with suppress(psutil.Error, OSError):
            total += _process_cpu(proc)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = time.process_time()
    # Reading a tree of 20 processes costs milliseconds of this process's CPU: as much
    # as a 50 ms map's own cost would move. Every sample's cost is kept out.
    _sampling += now - started
    return total + now - _sampling + reaped.ru_utime + reaped.ru_stime


def _process_cpu(proc: Any) -> float:
    """A living process's own CPU seconds, and its reaped children's."""
    times = proc.cpu_times()
    reaped = float(times.children_user + times.children_system)
    try:
        return time.clock_gettime(_cpu_clock(proc.pid)) + reaped
    except OSError:  # not Linux, or the process is gone: the 10 ms ticks will do
        return float(times.user + times.system) + reaped


def _cpu_clock(pid: int) -> int:
    # Linux's id of another process's CPU clock (CPUCLOCK_SCHED, whole process):
    # what clock_getcpuclockid(3) returns, which Python does not expose.
    return ((~pid) << 3) | 2


def _below(proc: Any, skip: Collection[int]) -> bool:
    if not skip:
        return False
    try:
        return any(parent.pid in skip for parent in proc.parents())
    except Exception:  # psutil.Error: the process is gone; it counts for nothing then
        return True
