"""What the process engine decides when a worker overstays or dies, kept apart
from the polling that acts on it: which worker to kill for a timeout, and what
each task a dead worker held gets (a pinned failure, a cancellation, or another
run). Nothing here reads a pipe or starts a process; the engine does that.
"""

from __future__ import annotations

import time
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from manycore._core import Batch, BatchResult, Done, describe_exit, pinned
from manycore._engine._workerproc import WorkerHandle, crash_error, timeout_error
from manycore._transport import shmem

if TYPE_CHECKING:
    from manycore._core import WorkerCrashed

__all__ = ["StartWatch", "Task", "overdue", "unread_crash", "verdicts"]

_CPU_WAIT = 0.05  # how often to look again at a worker that waits for a CPU
_CPU_WAIT_MAX = 10.0  # ... and for how long at most (the limit, if larger)
# Workers that may die before reading the same batch before it is blamed: one
# killed while idle is bad luck, a run of them is something in what it is sent
# ahead of the batch (its function's large globals) that ends every worker.
_UNREAD_DEATHS = 3


@dataclass(eq=False)
class Task:
    """A batch as the engine holds it: pickled once, sent (perhaps again) to a worker."""

    batch: Batch
    done: Done
    fn_id: int
    fn_blob: bytes
    body: bytes
    oob: tuple[str, list[tuple[int, int]]] | None = None  # where its large buffers are
    segment: shmem.Segment | None = None  # holding them; given back when the task ends
    # No worker can still use the segment: it was never sent, the worker said it
    # kept no array of it, or the worker is dead. Only then is it reused.
    clean: bool = True
    claimed: bool = False  # its future was marked running (done once, even if re-sent)
    wire_key: int = 0  # the key it was last sent under (the worker's slot names it)
    dropped: bool = False  # force-cancelled: settled already; ignore its result
    moving: float = 0.0  # seconds the parent spent pickling and loading its data
    handed: float = 0.0  # when a timed batch became its worker's oldest (see overdue)
    unread_deaths: int = 0  # workers that died before reading it, in a row
    sent_idle: float = 0.0  # when it was written to an idle worker (its round trip)


# Why the parent killed a worker, or that its kill was settled: ("timeout", task,
# the item it ran, the stage it was in), ("cancel", task) or ("settled", None).
Doom: TypeAlias = (
    tuple[Literal["timeout"], Task, int, str]
    | tuple[Literal["cancel"], Task]
    | tuple[Literal["settled"], None]
)


def overdue(w: WorkerHandle, now: float) -> tuple[Doom | None, float | None]:
    """For a worker's oldest batch: (the worker's doom if it overstayed its
    timeout, else None; seconds until it could, or None when nothing is timed).

    Two stages, each bounded by the timeout. Taking it: from hand-off (written to
    a worker that runs nothing before it, or the batch before it reported done)
    until the worker reads it from its pipe; the worker's init counts, its
    interpreter booting and its waiting for a CPU do not (each up to
    ``_CPU_WAIT_MAX`` or the limit, if larger). Running it: from that
    read, item 0 (unpickling the arguments included), then each later item from
    when the worker started it, which is when the one before it was done. So an
    argument that blocks while it loads, an init that never returns and a
    stopped worker (even one stopped as it started) all end at a deadline.
    """
    if not w.inflight or w.doom is not None or w.retiring:
        return None, None  # (a retiring worker holds nothing: it handed it back)
    task: Task = w.inflight[0]
    limit = task.batch.timeout
    if limit is None:
        return None, None
    booted = w.booted()
    if booted == 0.0:  # still starting: that does not count, up to a bound
        left = task.handed + limit + max(limit, _CPU_WAIT_MAX) - now
        if left > 0:  # look again after at most the limit: it may boot meanwhile
            return None, min(left, limit)
        if w.proc.poll() is not None:
            return None, None  # it died: its end of file, due now, re-queues
        return ("timeout", task, 0, "boot"), None  # frozen or hung as it started
    taken = w.taken_at(task.wire_key)
    seen = w.read_slot()
    if seen is not None and seen[0] == task.wire_key:
        offset, began, phase = seen[1], seen[2], "running"
        if offset == 0 and taken is not None:
            began = taken
    elif taken is not None:
        offset, began, phase = 0, taken, "loading"
    else:
        offset, began = 0, task.handed if booted is None else max(task.handed, booted)
        phase = "unread" if w.ready() else "init"
    left = began + limit - now
    if left > 0:
        return None, left
    if phase == "unread":
        if w.proc.poll() is not None:
            return None, None  # it died idle: its end of file, due now, re-queues it
        if w.runnable() and left > -max(limit, _CPU_WAIT_MAX):
            return None, _CPU_WAIT  # only waiting for a CPU (a loaded machine)
    return ("timeout", task, offset, phase), None


class StartWatch:
    """Judges workers that die before their init returned by themselves (not
    killed by the parent, not retiring). With an init, that init failed: the
    pool breaks, as when it raises. Without one, only a run of such deaths does
    (a worker killed as it started is no one's fault; one that can never start
    would otherwise be replaced forever)."""

    def __init__(self, has_init: bool, tries: int = 3):
        self.has_init = has_init
        self.tries = tries
        self.deaths = 0  # in a row

    def judge(self, w: WorkerHandle, exitcode: int | None) -> tuple[WorkerCrashed, str] | None:
        """(the cause, the pool's error message) if this death breaks the pool."""
        if w.doom is not None or w.retiring or w.ready():
            self.deaths = 0
            return None
        self.deaths += 1
        how = describe_exit(exitcode)
        from manycore._core import WorkerCrashed  # (loaded when raised: see _core._broken)

        error = WorkerCrashed(
            f"worker process {w.proc.pid} died ({how}) before its init returned",
            exitcode=exitcode,
        )
        if self.has_init:
            return error, f"a worker's init ended its process ({how}); the pool is broken"
        if self.deaths >= self.tries:
            return (
                error,
                f"{self.deaths} worker processes in a row died as they started "
                f"({how}); the pool is broken",
            )
        return None


def verdicts(
    w: WorkerHandle, lost: list[Task], exitcode: int | None
) -> dict[Task, BatchResult | BaseException]:
    """The outcome of each task a dead worker held; the others run again.

    A worker runs its batches in order, so only the oldest can have been
    running: the one behind it never started and is simply re-queued. So is the
    oldest if the worker never read it: a worker killed while idle (the batch was
    written as it died) is no item's failure.
    """
    doom = w.doom
    if doom is not None and doom[0] == "cancel":
        return {doom[1]: CancelledError()} if doom[1] in lost else {}
    if not lost or w.retiring or (doom is not None and doom[0] == "settled"):
        return {}  # what it held is innocent: run it all again
    first = lost[0]
    pid = w.proc.pid
    if doom is not None:  # ("timeout", task, offset, phase)
        timed_out = doom[1]
        if timed_out not in lost:  # force-cancelled meanwhile
            return {}
        if doom[3] == "init" and len(timed_out.batch) > 1:
            # Its worker's init had not returned: no item had a say. Running each
            # alone would make a replacement run that init again for every item.
            return {timed_out: _all_late(timed_out.batch, pid)}
        if doom[3] != "running" and len(timed_out.batch) > 1:
            # No item had started: which one held it up (an argument that blocks
            # while it loads) is unknown. As after a crash, the scheduler runs each
            # on its own; only the guilty one times out again.
            return {timed_out: crash_error(timed_out.batch, pid, exitcode)}
        late = timeout_error(timed_out.batch, doom[2], pid, doom[3])
        limit = timed_out.batch.timeout or 0.0  # it ran at least that long
        return {timed_out: pinned(timed_out.batch, doom[2], late, limit)}
    acked = w.acked()
    if acked is not None and acked != first.wire_key:
        # It died before it read the batch (killed while idle): no one's fault,
        # unless it happens again and again (re-queued forever otherwise).
        first.unread_deaths += 1
        if first.unread_deaths < _UNREAD_DEATHS:
            return {}
        return {first: unread_crash(first.batch, pid, exitcode, first.unread_deaths)}
    seen = w.read_slot() if first.batch.timeout is not None else None
    if seen is not None and seen[0] == first.wire_key:
        offset = seen[1]  # the slot says which item it was running
        error = crash_error(first.batch, pid, exitcode, offset)
        ran = max(0.0, time.monotonic() - seen[2])
        return {first: pinned(first.batch, offset, error, ran)}
    return {first: crash_error(first.batch, pid, exitcode)}


def _all_late(batch: Batch, pid: int) -> BatchResult:
    """Every item of a batch that timed out waiting for its worker's init."""
    n = len(batch)
    errors: dict[int, BaseException] = {i: timeout_error(batch, i, pid, "init") for i in range(n)}
    return BatchResult([None] * n, errors, batch.timeout or 0.0)


def unread_crash(batch: Batch, pid: int, exitcode: int | None, deaths: int) -> WorkerCrashed:
    """The error of a batch that every worker it was written to died before reading."""
    if len(batch) == 1:
        what = batch.name_item(0)
    else:
        what = f"input items {batch.start}..{batch.start + len(batch) - 1}"
    from manycore._core import WorkerCrashed  # (loaded when raised: see _core._broken)

    return WorkerCrashed(
        f"{deaths} worker processes in a row died before they had read {what} from their "
        f"pipe (the last, {pid}: {describe_exit(exitcode)}); what is sent ahead of it, the "
        "function and the large globals it reads, may end the worker as it loads",
        exitcode=exitcode,
        index=batch.start if len(batch) == 1 else None,
    )
