"""The process engine: worker processes fed through pipes, without polling.

Data flow (one engine per pool)::

    caller thread (submit / map)                 whoever polls: a caller waiting for
    ───────────────────────────                  its result, else the I/O thread
    pickle items once ─► a worker has a free ─►  non-blocking write ─► task pipe ─► worker
                         slot? (≤ 2 each)                                             │
                         else ► pending deque                                         ▼
                                                 selector wakes on a result pipe ◄────┘
    done(batch, result) ◄── ready deque ◄─────── read frames, unpickle, rebuild errors
                                                 refill that worker from pending
                                                 EOF on a result pipe = the worker died:
                                                   fail the batch it had read (none if
                                                   it died idle), re-queue the rest,
                                                   replace it
                                                 an item overstays its timeout: kill its
                                                   worker; its EOF settles it as above
                                                 (the last two: _engine_workers, acting
                                                 on the verdicts of _faults)

Why it never hangs: every blocking wait in the parent is the selector, which wakes
on a result, on a worker's death (end of file on its result pipe: the worker holds
the only write end) or on the wake-up pipe. Writes to workers are non-blocking;
what does not fit waits in the worker's out-buffer until the pipe is writable, so
a poller never blocks on a worker that is itself blocked writing a result.

Outcomes go through one ``_ready`` deque, and callbacks run one at a time after it
is updated: a callback that itself waits on another future (a nested poll) or that
raises cannot lose or strand another outcome.

Lock order: the polling lock (``_turns``) before ``_lock``. ``_lock`` guards the
pending deque, each worker's in-flight deque and out-buffer, ``_ready`` and the
state. Callbacks run with ``_lock`` released.

Layout: this module is the work's path (submit, dispatch, polling, reading
results, delivering outcomes). What happens to the worker processes themselves
(timeouts and force-cancels that kill one, burying and replacing a dead one,
breaking the engine when an init fails, shutting down and closing it all) is the
:class:`~manycore._engine._workers.WorkerLifecycle` mixin, under the same locks.
"""

from __future__ import annotations

import atexit
import os
import selectors
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future
from concurrent.futures import wait as futures_wait
from contextlib import AbstractContextManager
from typing import TypeVar

from manycore._core import Batch, BatchResult, Done, pool_closed
from manycore._engine import _launch
from manycore._engine._faults import StartWatch, Task
from manycore._engine._inherit import dumps_init
from manycore._engine._prefetch import Prefetch
from manycore._engine._turns import PollTurns, WakePipe
from manycore._engine._workerproc import WorkerHandle, WorkerSpec, decode_result, start_worker
from manycore._engine._workers import EngineState, WorkerLifecycle
from manycore._transport import FN_LIMIT, FnIds, dumps_fn, encode_args, pack_shared, shmem

__all__ = ["EngineState", "ProcessEngine"]

T = TypeVar("T")


_DEPTH = 2  # batches a worker holds at most: one running, one queued (see _prefetch)
_HANDOVER_WAIT = 0.01  # how long a caller waits for the I/O thread to step aside


class ProcessEngine(WorkerLifecycle):
    """Runs batches on ``workers`` processes started with ``start_method``;
    ``slot_env[i]``: what worker slot ``i`` (and each replacement of it) adds to
    its environment as it starts."""

    def __init__(
        self,
        workers: int,
        start_method: str,
        init: Callable[..., object] | None = None,
        init_args: tuple[object, ...] = (),
        max_tasks: int | None = None,
        max_memory: int | None = None,
        blas_threads: int | None = None,
        exit: Callable[[], object] | None = None,
        shared: object = None,
        slot_env: tuple[Mapping[str, str], ...] = (),
    ):
        self.workers = workers
        self.start_method = start_method
        self.restarts = 0  # workers replaced (crash, timeout, kill, task or memory limit)
        self.restarts_by_slot: dict[int, int] = {}
        self._starts = StartWatch(init is not None)
        setup = None
        if init is not None or exit is not None:
            setup = dumps_init((init, tuple(init_args), exit), start_method)
        shared_blob, self._shared_segment = pack_shared(shared)
        self._spec = WorkerSpec(
            start_method, setup, max_tasks, max_memory, blas_threads, shared_blob, slot_env
        )
        self._lock = threading.Lock()
        self._state = EngineState.RUNNING
        self._broken: BaseException | None = None
        self._broken_text = ""  # why, worded once: work in flight and work refused later read alike
        self._pending: deque[Task] = deque()
        self._ready: deque[tuple[Task, BatchResult | BaseException]] = deque()
        self._workers: list[WorkerHandle] = []
        self._fn_ids = FnIds()
        self._next_key = 0
        self._prefetch = Prefetch()
        self._segments = shmem.SegmentPool()
        shmem.remove_orphans()  # left by processes killed before they could clean up
        self._timed = 0  # timed tasks not yet finished: the poller checks deadlines
        self._retirees = 0  # retired workers not yet ended: the poller bounds their exit
        self._turns = PollTurns()
        self._selector = selectors.DefaultSelector()
        self._waker = WakePipe(_launch.ENGINE_FDS)
        self._selector.register(self._waker.fileno(), selectors.EVENT_READ, None)
        if start_method == "fork":
            # Loaded here once, not in each forked child (~3 ms a worker, as its
            # copy-on-write pages make every import in a new child slow).
            from manycore._engine import _worker  # noqa: F401
        try:
            for index in range(workers):
                self._add_worker(start_worker(self._spec, index), index)
        except BaseException:
            self._close_everything()
            raise
        self._thread = threading.Thread(target=self._io_loop, name="manycore-io", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    # ----------------------------------------------------------- caller side

    @property
    def state(self) -> EngineState:
        return self._state

    def submit(self, batch: Batch, done: Done) -> None:
        """Queue ``batch``; ``done`` is called exactly once, from the polling thread.
        Its pickling happens here (:mod:`manycore._transport._payload`)."""
        began = time.perf_counter()
        fn_blob = batch.fn_blob if batch.fn_blob is not None else dumps_fn(batch.fn)
        body, oob, segment = encode_args(batch, self._segments)
        encoding = time.perf_counter() - began
        with self._lock:
            if self._state is not EngineState.RUNNING:
                if segment is not None:
                    self._segments.give(segment, reusable=False)
                raise self._refusal()
            fn_id = self._fn_ids.get(fn_blob)
            task = Task(batch, done, fn_id, fn_blob, body, oob, segment, moving=encoding)
            self._pending.append(task)
            if batch.timeout is not None:
                self._timed += 1
            self._dispatch_locked()
        self._turns.notify_work()

    def cancel(self, batch: Batch) -> bool:
        """Drop ``batch`` if no worker has it yet; its ``done`` gets CancelledError."""
        with self._lock:
            for task in self._pending:
                if task.batch is batch:
                    self._pending.remove(task)
                    break
            else:
                return False
        self._finish(task, CancelledError())
        return True

    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._workers]

    def wait_for(self, future: Future[T], timeout: float | None) -> None:
        """Block until ``future`` is done or ``timeout`` passes, polling if we can."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # drive() also returns once the engine has finished: a future settled
        # from outside (a retry that could not be sent) is then waited for here.
        if not self.drive(future.done, deadline) or not future.done():
            with self._turns.passive():
                left = None if deadline is None else deadline - time.monotonic()
                futures_wait([future], left)

    def drive(self, until: Callable[[], bool], deadline: float | None = None) -> bool:
        """Poll the engine in this thread until ``until()`` holds or ``deadline`` passes.

        Returns False, having waited for nothing, when another thread keeps
        polling: the caller must then wait passively (inside ``passive()``), and
        that thread delivers its results.
        """
        if until():
            return True
        turns = self._turns
        turns.enter_driver()
        try:
            driving = turns.acquire(blocking=False)
            if not driving and turns.holder == turns.io_ident:
                self._wake()  # ask the I/O thread to step aside; it releases the lock
                driving = turns.acquire(timeout=_HANDOVER_WAIT)
            if not driving:
                return False
            try:
                while not until():
                    left = None if deadline is None else deadline - time.monotonic()
                    if (left is not None and left <= 0) or self._io_step(left):
                        break
            finally:
                turns.release()
        finally:
            turns.leave_driver()
        return True

    def passive(self) -> AbstractContextManager[None]:
        """Context for a caller that waits without polling (see :meth:`drive`)."""
        return self._turns.passive()

    def wake(self) -> None:
        """Make whoever polls look again (a future was settled from outside)."""
        self._wake()
        self._turns.notify_work()

    def _refusal(self) -> Exception:
        if self._state is EngineState.BROKEN:
            from manycore._core import PoolBroken  # (loaded when raised: see _core._broken)

            err = PoolBroken(self._broken_text)
            err.__cause__ = self._broken
            return err
        return pool_closed()

    def _wake(self) -> None:
        self._waker.wake()

    # ------------------------------------------------------------- dispatch

    def _dispatch_locked(self) -> None:
        pending = self._pending
        while pending:
            best = self._free_worker_locked()
            if best is None:
                return
            task = pending.popleft()
            if not task.claimed:
                claim = task.batch.claim
                if claim is not None and not claim():
                    continue  # its future was cancelled while it waited
                task.claimed = True
            self._send_locked(best, task)

    def _free_worker_locked(self) -> WorkerHandle | None:
        """An idle worker, else one whose running batch is short enough to queue
        a batch behind (see :mod:`manycore._engine._prefetch`), else None."""
        queue_to: WorkerHandle | None = None
        for w in self._workers:
            if w.dead:
                continue
            n = len(w.inflight)
            if n == 0:
                return w
            if queue_to is None and n < _DEPTH and self._may_queue_locked(w):
                queue_to = w
        return queue_to

    def _may_queue_locked(self, w: WorkerHandle) -> bool:
        running = w.inflight[-1]
        return self._prefetch.may_queue_behind(running.fn_id, len(running.batch))

    def _send_locked(self, w: WorkerHandle, task: Task) -> None:
        self._next_key += 1
        task.wire_key = self._next_key
        task.clean = task.segment is None
        track = task.batch.timeout is not None
        if track and not w.inflight:
            task.handed = time.monotonic()  # its timeout runs from now (see overdue)
        task.sent_idle = 0.0 if w.inflight or w.out else time.perf_counter()
        w.inflight.append(task)
        sent = w.send(
            task.wire_key,
            task.fn_id,
            task.fn_blob,
            task.batch.star,
            track,
            task.oob,
            task.body,
            FN_LIMIT,
            task.batch.time_items,
        )
        if sent is None:
            # The worker died while idle: the task never reached it. Put it back for
            # another worker; the poller buries this one when it sees its EOF.
            w.inflight.pop()
            w.dead = True
            self._pending.appendleft(task)
            self._wake()
        elif not sent:
            self._wake()  # a partial write: the poller registers write interest

    # -------------------------------------------------------------- polling

    def _io_loop(self) -> None:
        turns = self._turns
        turns.io_ident = threading.get_ident()
        try:
            while True:
                turns.io_wait_turn(self._has_work)
                turns.acquire()
                try:
                    while True:
                        if self._io_step(None):
                            return
                        if turns.io_should_yield() or not (turns.closing or self._has_work()):
                            break
                finally:
                    turns.release()
        finally:
            self._close_everything()

    def _has_work(self) -> bool:
        with self._lock:
            return bool(self._pending or self._ready) or any(
                w.inflight or w.out for w in self._workers
            )

    def _finished(self) -> bool:
        if self._state is EngineState.RUNNING:  # (read without the lock: asked each poll)
            return False
        with self._lock:
            if self._state is EngineState.CLOSED:
                return True
            return (
                self._state is EngineState.CLOSING
                and not self._pending
                and not self._ready
                and not any(w.inflight for w in self._workers)
            )

    def _io_step(self, timeout: float | None) -> bool:
        """One turn of polling; True when the engine is finished."""
        if self._deliver():  # left over, e.g. by a poll nested in a callback
            return self._finished()
        if self._finished():
            return True
        due = self._enforce_timeouts()
        if due is not None and (timeout is None or due < timeout):
            timeout = due
        events = self._selector.select(timeout)
        dead: list[WorkerHandle] = []
        for key, mask in events:
            w = key.data
            if w is None:
                self._waker.drain()
                continue
            if mask & selectors.EVENT_READ:
                self._read(w, dead)
            if mask & selectors.EVENT_WRITE:
                with self._lock:
                    w.flush()
        for w in dead:
            self._bury(w)
        with self._lock:
            self._dispatch_locked()
            self._update_write_interest_locked()
        self._deliver()
        return self._finished()

    def _deliver(self) -> bool:
        """Run the callbacks of ready outcomes, one at a time; True if any ran."""
        delivered = False
        # Looked at without the lock first (each poll asks twice): whoever adds
        # an outcome from another thread wakes the poller, which then looks again.
        while self._ready:
            with self._lock:
                if not self._ready:
                    break
                task, outcome = self._ready.popleft()
            delivered = True
            self._finish(task, outcome)
        return delivered

    def _read(self, w: WorkerHandle, dead: list[WorkerHandle]) -> None:
        try:
            frames = w.frames.read(w.result_fd)
        except BlockingIOError:
            return
        except OSError:
            frames = None
        if frames is None:
            dead.append(w)
            return
        for payload in frames:
            began = time.perf_counter()
            decoded = decode_result(payload)
            decoding = time.perf_counter() - began
            if decoded.init_error is not None:
                self._break(decoded.init_error)
                continue
            with self._lock:
                if decoded.retire:  # it exits now: no more work; its EOF is no crash
                    self._retire_locked(w)
                    continue
                if not w.inflight:
                    continue  # already failed by terminate() or _break()
                task = w.inflight.popleft()
                if w.inflight and w.inflight[0].batch.timeout is not None:
                    w.inflight[0].handed = time.monotonic()  # next in line: its clock runs
                task.clean = not decoded.kept
                if task.dropped:  # settled already; only its segment was waiting
                    self._release_segment(task)
                    continue
                outcome = decoded.outcome
                assert outcome is not None
                if isinstance(outcome, BatchResult):
                    outcome.worker = w.index
                    outcome.moving += task.moving + decoding
                    self._measure_locked(task, outcome, began)
                if w.doom is not None and w.doom[1] is task:
                    # It finished as we killed it: a timed-out item made it after
                    # all; a force-cancelled one stays cancelled.
                    if w.doom[0] == "cancel":
                        outcome = CancelledError()
                    w.doom = ("settled", None)
                self._ready.append((task, outcome))

    def _measure_locked(self, task: Task, outcome: BatchResult, now: float) -> None:
        self._prefetch.observe(task.fn_id, len(task.batch), outcome.elapsed)
        if task.sent_idle:
            self._prefetch.observe_round_trip(now - task.sent_idle - outcome.elapsed)

    def _update_write_interest_locked(self) -> None:
        for w in self._workers:
            want = bool(w.out)
            if want != w.writing:
                if want:
                    self._selector.register(w.task_fd, selectors.EVENT_WRITE, w)
                else:
                    self._selector.unregister(w.task_fd)
                w.writing = want

    # ------------------------------------------------------------- outcomes

    def _finish(self, task: Task, outcome: BatchResult | BaseException) -> None:
        """Hand a task its outcome (every task ends here, exactly once)."""
        if task.batch.timeout is not None:
            with self._lock:
                self._timed -= 1
        if task.segment is not None and not task.dropped:
            self._segments.give(task.segment, reusable=task.clean)
            task.segment = None
        task.done(task.batch, outcome)


# Engines still running at exit are stopped rather than waited for: nobody is left
# to read their results, and a hung task must not hold the interpreter open.
_LIVE: weakref.WeakSet[ProcessEngine] = weakref.WeakSet()


@atexit.register
def _terminate_live_engines() -> None:
    for engine in list(_LIVE):
        engine.terminate()


def _forget_engines_in_child() -> None:
    # A child made by os.fork() has copies of the engines, not their workers: at its
    # exit it must not terminate them (that would unlink the parent's segments).
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_engines_in_child)
