"""What the process engine decides when a worker overstays or dies, kept apart
from the polling that acts on it: which worker to kill for a timeout, and what
each task a dead worker held gets (a pinned failure, a cancellation, or another
run). Nothing here reads a pipe or starts a process; the engine does that.
"""

from __future__ import annotations

import time
from concurrent.futures import CancelledError
from dataclasses import dataclass

from . import _shm
from ._batch import Batch, BatchResult, Done, pinned
from ._workerproc import WorkerHandle, crash_error, timeout_error

__all__ = ["Task", "overdue", "verdicts"]


@dataclass(eq=False)
class Task:
    """A batch as the engine holds it: pickled once, sent (perhaps again) to a worker."""

    batch: Batch
    done: Done
    fn_id: int
    fn_blob: bytes
    body: bytes
    oob: tuple[str, list[tuple[int, int]]] | None = None  # where its large buffers are
    segment: _shm.Segment | None = None  # holding them; given back when the task ends
    # No worker can still use the segment: it was never sent, the worker said it
    # kept no array of it, or the worker is dead. Only then is it reused.
    clean: bool = True
    claimed: bool = False  # its future was marked running (done once, even if re-sent)
    wire_key: int = 0  # the key it was last sent under (the worker's slot names it)
    dropped: bool = False  # force-cancelled: settled already; ignore its result
    moving: float = 0.0  # seconds the parent spent pickling and loading its data


def overdue(w: WorkerHandle, now: float) -> tuple[int | None, float | None]:
    """For a worker's running batch: (offset of the item that overstayed its
    timeout, or None; seconds until it could, or None when nothing is timed)."""
    if not w.inflight or w.doom is not None:
        return None, None
    task: Task = w.inflight[0]
    limit = task.batch.timeout
    if limit is None:
        return None, None
    seen = w.read_slot()
    if seen is None or seen[0] != task.wire_key:
        return None, limit  # not started yet: it cannot time out sooner
    left = seen[2] + limit - now
    return (seen[1], None) if left <= 0 else (None, left)


def verdicts(
    w: WorkerHandle, lost: list[Task], exitcode: int | None
) -> dict[Task, BatchResult | BaseException]:
    """The outcome of each task a dead worker held; the others run again.

    A worker runs its batches in order, so only the oldest can have been
    running: the one behind it never started and is simply re-queued.
    """
    doom = w.doom
    if doom is not None and doom[0] == "cancel":
        return {doom[1]: CancelledError()} if doom[1] in lost else {}
    if not lost or w.retiring or (doom is not None and doom[0] == "settled"):
        return {}  # what it held is innocent: run it all again
    first = lost[0]
    pid = w.proc.pid
    if doom is not None:  # ("timeout", task, offset)
        timed_out = doom[1]
        if timed_out not in lost:  # force-cancelled meanwhile
            return {}
        late = timeout_error(timed_out.batch, doom[2], pid)
        limit = timed_out.batch.timeout or 0.0  # it ran at least that long
        return {timed_out: pinned(timed_out.batch, doom[2], late, limit)}
    seen = w.read_slot() if first.batch.timeout is not None else None
    if seen is not None and seen[0] == first.wire_key:
        offset = seen[1]  # the slot says which item it was running
        error = crash_error(first.batch, pid, exitcode, offset)
        ran = max(0.0, time.monotonic() - seen[2])
        return {first: pinned(first.batch, offset, error, ran)}
    return {first: crash_error(first.batch, pid, exitcode)}
