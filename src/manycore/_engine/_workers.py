"""The process engine's workers: their deadlines, deaths and replacements.

:class:`WorkerLifecycle` is the half of :class:`~manycore._engine._engine.ProcessEngine`
that decides what happens to a worker process rather than to the work flowing
through it: killing a worker whose item overstayed its timeout or that runs a
force-cancelled batch, burying a worker whose result pipe reached end of file
(settling or re-queueing what it held, then starting its replacement), breaking
the engine when a worker's init fails, and ending it (``shutdown``,
``terminate``, and closing every worker, pipe and segment once polling stops).
What to decide is in :mod:`manycore._engine._faults`; this module acts on it. The work's
path (submit, dispatch, polling, reading results) stays in :mod:`manycore._engine._engine`.

Locks (the engine's, in the same order): the polling turn (``_turns``) before
``_lock``. Methods named ``*_locked`` expect ``_lock`` held; the others take it
themselves and call back into the engine (``_finish``, ``_deliver``) with it
released, so a callback never runs under it. :meth:`_enforce_timeouts` and
:meth:`_bury` run from a poll, so their caller holds the polling turn;
:meth:`_close_everything` takes it, so that no poller is inside ``select()``
while the selector closes. ``kill``, ``shutdown`` and ``terminate`` are called
from any thread and hold neither when they start.
"""

from __future__ import annotations

import abc
import enum
import selectors
import threading
import time
from collections import deque
from concurrent.futures import CancelledError

from manycore._core import Batch, BatchResult, is_worker_crash
from manycore._engine._faults import StartWatch, Task, overdue, verdicts
from manycore._engine._turns import PollTurns, WakePipe
from manycore._engine._workerproc import (
    WorkerHandle,
    WorkerSpec,
    close_fd,
    start_worker,
    stop_workers,
)
from manycore._transport import shmem

__all__ = ["EngineState", "WorkerLifecycle"]

_STOP_GRACE = 5.0  # seconds a closing worker gets to exit before it is killed


class EngineState(enum.Enum):
    RUNNING = "running"
    BROKEN = "broken"  # a worker's init failed: every task fails with PoolBroken
    CLOSING = "closing"  # no new work; finishing what was accepted
    CLOSED = "closed"


class WorkerLifecycle(abc.ABC):
    """Mixin: kills, burials, replacements and the final close of an engine's
    workers. The engine's ``__init__`` sets the attributes declared here."""

    restarts: int
    restarts_by_slot: dict[int, int]
    _starts: StartWatch
    _spec: WorkerSpec
    _shared_segment: shmem.Segment | None
    _lock: threading.Lock
    _state: EngineState
    _broken: BaseException | None
    _broken_text: str
    _pending: deque[Task]
    _ready: deque[tuple[Task, BatchResult | BaseException]]
    _workers: list[WorkerHandle]
    _segments: shmem.SegmentPool
    _timed: int
    _retirees: int
    _turns: PollTurns
    _selector: selectors.BaseSelector
    _waker: WakePipe
    _thread: threading.Thread  # the I/O thread

    # What the engine's polling side provides (see manycore._engine._engine).

    @abc.abstractmethod
    def _finish(self, task: Task, outcome: BatchResult | BaseException) -> None: ...

    @abc.abstractmethod
    def _deliver(self) -> bool: ...

    @abc.abstractmethod
    def _wake(self) -> None: ...

    # ------------------------------------------------------------ deadlines

    def _enforce_timeouts(self) -> float | None:
        """Kill each worker whose current item overstayed its batch's timeout;
        seconds until the next item could time out (None: nothing is timed).
        Also kills a retired worker still in the pool's exit after the grace a
        closing worker gets: its replacement waits for it to end."""
        if self._timed <= 0 and self._retirees <= 0:
            return None  # the common case costs nothing per poll
        now = time.monotonic()
        soonest: float | None = None
        with self._lock:
            if self._retirees > 0:
                soonest = self._end_retirees_locked(now)
            for w in self._workers:
                doom, left = overdue(w, now)
                if doom is not None:
                    w.doom = doom
                    w.dead = True
                    w.proc.kill()  # its EOF brings it to _bury
                elif left is not None:
                    soonest = left if soonest is None else min(soonest, left)
        return soonest

    def kill(self, batch: Batch) -> bool:
        """Stop ``batch`` wherever it is; its ``done`` gets CancelledError. False if
        the batch is not here (it finished already).

        Pending: dropped. Running: its worker is killed (the batch queued behind it
        runs elsewhere). Queued in a worker's pipe: the worker is told through its
        slot to skip it, and a reply that raced that is ignored.
        """
        with self._lock:
            found = self._find_locked(batch)
            if found is None:
                return False
            w, position, task = found
            if w is None:
                self._pending.remove(task)
            elif position == 0 and w.doom is None:
                w.doom = ("cancel", task)
                w.dead = True
                w.proc.kill()  # the verdict comes with its EOF
                return True
            elif task.dropped:
                return True
            else:
                task.dropped = True
                if position > 0:
                    w.skip(task.wire_key)
                self._ready.append((task, CancelledError()))
        if w is None:
            self._finish(task, CancelledError())
        else:
            self._wake()
            self._turns.notify_work()
        return True

    def _find_locked(self, batch: Batch) -> tuple[WorkerHandle | None, int, Task] | None:
        for task in self._pending:
            if task.batch is batch:
                return None, -1, task
        for w in self._workers:
            for position, task in enumerate(w.inflight):
                if task.batch is batch:
                    return w, position, task
        return None

    # ------------------------------------------------------------- failures

    def _take_all_locked(self) -> list[Task]:
        """Remove and return every task not yet finished: pending and in flight.
        (Force-cancelled ones are finished already: only their segments go.)"""
        tasks = list(self._pending)
        self._pending.clear()
        for w in self._workers:
            for task in w.inflight:
                if task.dropped:
                    task.clean = False  # the worker may still read it: never reuse
                    self._release_segment(task)
                else:
                    tasks.append(task)
            w.inflight.clear()
        return tasks

    def _break(self, error: BaseException, message: str | None = None) -> None:
        """A worker's init failed: fail everything, start nothing more."""
        # (Loaded when raised: see _core._broken.)
        from manycore._core import PoolBroken, init_raised

        err = init_raised(error) if message is None else PoolBroken(message)
        err.__cause__ = error
        with self._lock:
            if self._state is EngineState.RUNNING:
                self._state = EngineState.BROKEN
                self._broken = error
                self._broken_text = str(err)
            self._ready.extend((t, err) for t in self._take_all_locked())

    def _release_segment(self, task: Task) -> None:
        if task.segment is not None:
            self._segments.give(task.segment, reusable=task.clean)
            task.segment = None

    # ---------------------------------------------------- burial, replacement

    def _bury(self, w: WorkerHandle) -> None:
        """A worker's result pipe closed: it died or retired. Settle what it held,
        replace it."""
        exitcode = w.proc.wait(1.0)
        if exitcode is None:
            w.proc.kill()
            exitcode = w.proc.wait(1.0)
        broken = self._starts.judge(w, exitcode)
        if broken is not None and self._state is EngineState.RUNNING:
            self._break(*broken)
        with self._lock:
            outcomes = self._settle_lost_locked(w, exitcode)
            if w.retiring:
                self._retirees -= 1
            replace = self._wants_replacement_locked()
        self._release(w)
        shmem.remove_segments_of(w.proc.pid)  # a result it made but never sent
        if replace:
            self._replace(w.index)
        if outcomes:
            with self._lock:
                self._ready.extend(outcomes.items())

    def _settle_lost_locked(
        self, w: WorkerHandle, exitcode: int | None
    ) -> dict[Task, BatchResult | BaseException]:
        """Drop a dead worker and decide what each task it held gets: the
        outcomes returned, or another run (re-queued first, in their order)."""
        self._workers.remove(w)
        lost = list(w.inflight)
        w.inflight.clear()
        for task in lost:
            task.clean = True  # its worker, and the worker's mappings, are gone
            if task.dropped:
                self._release_segment(task)
        lost = [t for t in lost if not t.dropped]  # settled already
        outcomes = verdicts(w, lost, exitcode)
        for outcome in outcomes.values():
            if isinstance(outcome, BatchResult):
                outcome.worker = w.index
            elif is_worker_crash(outcome):  # pool.stats() counts it here
                outcome.worker_slot = w.index
        self._pending.extendleft(reversed([t for t in lost if t not in outcomes]))
        return outcomes

    def _wants_replacement_locked(self) -> bool:
        return self._state is EngineState.RUNNING or (
            self._state is EngineState.CLOSING and bool(self._pending)
        )

    def _retire_locked(self, w: WorkerHandle) -> None:
        """A worker said it retires (a task or memory limit): it reads nothing more,
        but may take a while to exit (the pool's ``exit`` runs first). What was
        written to it runs elsewhere now, not when its end of file comes; its
        replacement starts then (so a pool never has more processes than
        workers), and :meth:`_end_retirees_locked` bounds that wait."""
        w.retiring = w.dead = True
        w.retired_at = time.monotonic()
        self._retirees += 1
        w.out.clear()  # the rest of a frame it will never read
        unread = [t for t in w.inflight if not t.dropped]
        for task in w.inflight:
            if task.dropped:
                self._release_segment(task)
        w.inflight.clear()
        self._pending.extendleft(reversed(unread))

    def _end_retirees_locked(self, now: float) -> float | None:
        """Kill retired workers whose exit overstayed ``_STOP_GRACE``; seconds
        until the next one would."""
        soonest: float | None = None
        for w in self._workers:
            if w.retiring and w.doom is None:
                left = w.retired_at + _STOP_GRACE - now
                if left <= 0:
                    w.doom = ("settled", None)  # it holds nothing: no item pays
                    w.proc.kill()  # its EOF brings it to _bury, which replaces it
                else:
                    soonest = left if soonest is None else min(soonest, left)
        return soonest

    def _replace(self, index: int) -> None:
        try:
            fresh = start_worker(self._spec, index)  # the slot's own env (its GPU)
        except Exception as exc:  # cannot start processes any more: fail loudly
            self._break(exc)
            return
        with self._lock:
            self._add_worker(fresh, index)
            self.restarts += 1
            self.restarts_by_slot[index] = self.restarts_by_slot.get(index, 0) + 1

    def _add_worker(self, w: WorkerHandle, index: int) -> None:
        w.index = index
        self._workers.append(w)
        self._selector.register(w.result_fd, selectors.EVENT_READ, w)

    def _release(self, w: WorkerHandle) -> None:
        for fd, registered in ((w.result_fd, True), (w.task_fd, w.writing)):
            if registered:
                try:
                    self._selector.unregister(fd)
                except (KeyError, ValueError):
                    pass
            close_fd(fd)
        w.writing = False
        w.close_slot()

    # -------------------------------------------------------------- closing

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        with self._lock:
            if self._state is EngineState.CLOSED:
                return
            self._state = EngineState.CLOSING
            cancelled = list(self._pending) if cancel_pending else []
            if cancel_pending:
                self._pending.clear()
        for task in cancelled:
            self._finish(task, CancelledError())
        self._turns.close()
        self._wake()
        if wait and self._may_join():
            self._thread.join()

    def terminate(self) -> None:
        """Kill every worker now; what was running fails with CancelledError."""
        with self._lock:
            if self._state is EngineState.CLOSED:
                return
            self._state = EngineState.CLOSING
            tasks = self._take_all_locked()
            for w in self._workers:
                w.proc.kill()
        for task in tasks:
            self._finish(task, CancelledError())
        self._turns.close()
        self._wake()
        if self._may_join():
            self._thread.join(_STOP_GRACE * 2)

    def _may_join(self) -> bool:
        # Joining from inside a poll (a done-callback shutting the pool down) would
        # wait for the I/O thread while holding the lock it needs: let it finish alone.
        return threading.current_thread() is not self._thread and not self._turns.owned()

    def _close_everything(self) -> None:
        self._turns.acquire()  # no poller may be inside select() while it closes
        try:
            with self._lock:
                if self._state is EngineState.CLOSED:
                    return
                self._state = EngineState.CLOSED
                # Normally nothing is left here; if polling died of a bug, fail
                # what remains rather than leave its callers waiting forever.
                left = self._take_all_locked()
                if left:
                    from manycore._core import PoolBroken  # (see _core._broken)

                    gone = PoolBroken("the pool stopped before this task finished")
                    self._ready.extend((t, gone) for t in left)
                workers = list(self._workers)
                self._workers.clear()
            self._selector.close()
            self._waker.close()
        finally:
            self._turns.release()
        self._deliver()
        self._free(workers)

    def _free(self, workers: list[WorkerHandle]) -> None:
        """Stop the workers, then give back every shared-memory segment."""
        stop_workers(workers, _STOP_GRACE)
        self._segments.close()
        if self._shared_segment is not None:
            self._shared_segment.unlink()
            self._shared_segment.close()
        for w in workers:
            shmem.remove_segments_of(w.proc.pid)  # results a dying worker left
