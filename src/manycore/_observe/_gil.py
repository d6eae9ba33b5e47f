"""Does a function release the GIL? Measured, never guessed from its name.

``backend="auto"`` runs two items at once on two threads (the overlap probe)
and times each call: when it started and ended, the CPU time of its own thread
(``time.thread_time``) and how long that thread waited for a CPU that other
programs kept busy. A function that holds the GIL keeps at most one CPU busy
however many threads run it (the calls take turns); one that releases it
(NumPy, a compiled kernel, hashing, compression) keeps two busy on two free CPUs.

So :func:`threads_busy` divides the CPU time of the calls by the probe's elapsed
time: for each thread, from the moment both were handed their first call to its
last call's end, less that thread's own wait for a busy CPU (from the hand-over
on, the wait before its first call included); the longest of these. About 1 for
a function that holds the GIL, about 2 for one that releases it. Elapsed time
from the hand-over rather than each call's own wall time: a short call that
holds the GIL does not interleave with the other, it runs whole before the other
even starts its clock, and each would look unhindered. Each thread's own wait
rather than an average: on a loaded machine one thread may queue far longer
than the other, and an average then reads the GIL into the difference.

Pure arithmetic over recorded timings, so the rule is tested without threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PROBE_THREADS", "ProbeCall", "probe_items", "threads_busy", "worth_probing"]

PROBE_THREADS = 2  # the probe runs items on this many threads at once
_PROBE_MIN = 2e-3  # seconds of CPU per call: below it, handing items over is noise
_PROBE_CPU = 0.03  # seconds of CPU each probe thread should get: a loaded machine's
# scheduler hands out CPUs in slices of a few ms, so shorter probes read noise
_PROBE_MAX = 16  # ... but at most this many items per thread
_PROBE_LEAST = 2  # ... and at least this many (a thread, on average: each takes the next
# item when it is free); on a loaded machine one call's reading swings with a preemption
_SLOW_CPUS = 0.75  # a sample whose calls are below this CPU share mostly wait already


@dataclass(frozen=True)
class ProbeCall:
    """One call made by the probe, on a thread of its own (seconds)."""

    start: float  # perf_counter when the call began
    end: float  # ... and ended
    cpu: float  # its thread's CPU time over the call
    queued: float = 0.0  # of its wall time: waiting for a CPU other programs kept busy
    thread: int = 0  # which thread ran it
    queued_before: float = 0.0  # the same, between the hand-over and its start (a first call)


def worth_probing(cpu_per_call: float, cpu_share: float, threads: int, cpus: int) -> bool:
    """Probe only calls that compute (their CPU share of the sample's wall time
    is ``cpu_share``) for long enough to time, where threads could run side by side."""
    return cpu_per_call >= _PROBE_MIN and cpu_share >= _SLOW_CPUS and min(threads, cpus) >= 2


def probe_items(cpu_per_call: float) -> int:
    """Items to probe with: enough for ``_PROBE_CPU`` of CPU on each thread."""
    per_thread = math.ceil(_PROBE_CPU / cpu_per_call) if cpu_per_call > 0 else _PROBE_MAX
    return PROBE_THREADS * min(_PROBE_MAX, max(_PROBE_LEAST, per_thread))


def threads_busy(calls: Sequence[ProbeCall], began: float) -> float | None:
    """CPUs the calls kept busy at once on average, from ``began`` (when they
    were handed to the threads) to the last end; None when it cannot tell
    (fewer than two threads ran calls, or no time elapsed)."""
    threads: dict[int, list[ProbeCall]] = {}
    for call in calls:
        threads.setdefault(call.thread, []).append(call)
    if len(calls) < 2 or len(threads) < 2:
        return None  # one thread ran every call: nothing ran at once
    if max(c.end for c in calls) <= began:
        return None
    elapsed = max(_unqueued(own, began) for own in threads.values())
    if elapsed <= 0:
        return None
    return sum(c.cpu for c in calls) / elapsed


def _unqueued(calls: list[ProbeCall], began: float) -> float:
    """One thread's time from ``began`` to its last call's end, less its waits
    for a busy CPU; never below its own CPU time."""
    queued = sum(c.queued + c.queued_before for c in calls)
    cpu = sum(c.cpu for c in calls)
    return max(cpu, max(c.end for c in calls) - began - queued)
