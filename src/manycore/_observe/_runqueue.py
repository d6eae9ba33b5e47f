"""How long a thread was ready to run but waited for a CPU (a run queue).

On a loaded machine a call's wall time minus its CPU time is not all waiting on
I/O or sleep: part of it the thread was runnable while other programs had every
CPU. ``backend="auto"`` and ``mc.profile`` read "not on a CPU" as "waits, so
threads overlap it"; that wait for a CPU must count as computing instead, or
pure-Python work on a busy machine goes to threads.

Linux reports it per thread in ``/proc/self/task/<tid>/schedstat`` (second
field: nanoseconds spent on a run queue). Where that file is missing (another
OS, no /proc, a kernel without sched_info) :func:`queued` returns None and the
callers count nothing, as before.
"""

from __future__ import annotations

import os
import threading

__all__ = ["queued", "queued_all", "queued_between"]

_PATH = "/proc/self/task/{tid}/schedstat"
_available = True  # cleared at the first failed read: no retry on every call


def queued() -> float | None:
    """Seconds the calling thread has waited on a run queue so far, or None
    where the kernel does not say."""
    global _available
    if not _available:
        return None
    try:
        with open(_PATH.format(tid=threading.get_native_id()), "rb", buffering=0) as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        _available = False
        return None


def queued_between(before: float | None, after: float | None, off_cpu: float) -> float:
    """The run-queue wait between two :func:`queued` reads, at most ``off_cpu``
    (the timed wall time less CPU time): the reads lie just outside the timed
    span, so a wait during a read must not be taken from the span."""
    if before is None or after is None:
        return 0.0
    return min(max(0.0, after - before), max(0.0, off_cpu))


def queued_all() -> float | None:
    """Seconds every live thread of this process has waited on a run queue so
    far, summed (a thread that ended takes its share along); None where the
    kernel does not say."""
    if not _available:
        return None
    total = 0.0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(_PATH.format(tid=tid), "rb", buffering=0) as f:
                total += int(f.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            continue  # it ended between the listing and the read
    return total
