"""The process engine: worker processes fed through pipes, without polling.

Data flow (one engine per pool)::

    caller thread (submit / map)                   I/O thread (one per engine)
    ───────────────────────────                    ──────────────────────────
    pickle items once  ──►  worker has a free ──►  non-blocking write ──►  task pipe ──► worker
                            slot? (≤ 2 each)                                              │
                            else ► pending deque                                          ▼
                                                   selector wakes on result pipe ◄── result pipe
    done(batch, result) ◄── rebuild errors ◄────── read frames, unpickle
                                                   refill that worker from pending
                                                   EOF on result pipe = worker died:
                                                     fail its in-flight batches, replace it

Why it never hangs: every blocking wait in the parent is the selector, which wakes
on a result, on a worker's death (end of file on its result pipe: the worker holds
the only write end) or on the wake-up pipe. Writes to workers are non-blocking;
what does not fit waits in the worker's out-buffer until the pipe is writable, so
the I/O thread can never block on a worker that is itself blocked writing a result.

Each worker gets at most two batches at a time: one running, one waiting in its
pipe, so it never idles for a round trip, and the rest stay in the parent where
any worker that frees up can take them.

Lock order: ``_lock`` guards the pending deque, each worker's in-flight deque and
out-buffer, and the state. Callbacks (``done``) always run with no lock held.
"""

from __future__ import annotations

import enum
import os
import pickle
import selectors
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import wait as futures_wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from . import _launch, _wire
from ._batch import Batch, BatchResult
from ._errors import PoolBroken, PoolClosed, WorkerCrashed, describe_exit
from ._remote import rebuild
from ._serialize import describe_unpicklable, dumps, dumps_code, dumps_fn
from ._turns import PollTurns

__all__ = ["EngineFuture", "EngineState", "ProcessEngine"]

Done = Callable[[Batch, "BatchResult | BaseException"], None]

_DEPTH = 2  # batches a worker holds at once: one running, one queued in its pipe
_FN_LIMIT = 128  # functions a worker caches before the parent tells it to forget
_HEAD = struct.Struct("<I")
_STOP_GRACE = 5.0  # seconds a closing worker gets to exit before it is killed


class EngineState(enum.Enum):
    RUNNING = "running"
    CLOSING = "closing"  # no new work; finishing what was accepted
    BROKEN = "broken"  # a worker's init failed: every task fails with PoolBroken
    CLOSED = "closed"


@dataclass(eq=False)
class _Task:
    batch: Batch
    done: Done
    fn_id: int
    fn_blob: bytes
    body: bytes


@dataclass(eq=False)
class _Worker:
    proc: _launch.WorkerProcess
    task_fd: int
    result_fd: int
    inflight: deque[_Task] = field(default_factory=deque)
    out: deque[memoryview] = field(default_factory=deque)
    known: set[int] = field(default_factory=set)
    frames: _wire.FrameBuffer = field(default_factory=_wire.FrameBuffer)
    writing: bool = False  # registered with the selector for write readiness


class EngineFuture(Future[Any]):
    """A ``Future`` whose ``result()`` reads its own result from the pipes.

    See :mod:`manycore._turns`: the waiting thread polls the engine itself when it
    can, which saves the hand-off through the I/O thread on every round trip.
    """

    def __init__(self, engine: ProcessEngine):
        super().__init__()
        self._engine = engine

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            self._engine.wait_for(self, timeout)
            if timeout is not None:
                timeout = 0  # the wait above used the time up
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done():
            self._engine.wait_for(self, timeout)
            if timeout is not None:
                timeout = 0
        return super().exception(timeout)


class ProcessEngine:
    """Runs batches on ``workers`` processes started with ``start_method``."""

    def __init__(
        self,
        workers: int,
        start_method: str,
        init: Callable[..., Any] | None = None,
        init_args: tuple[Any, ...] = (),
    ):
        self.workers = workers
        self.start_method = start_method
        self._init_blob: bytes | None = (
            dumps_code((init, tuple(init_args))) if init is not None else None
        )
        self._lock = threading.Lock()
        self._state = EngineState.RUNNING
        self._broken: BaseException | None = None
        self._pending: deque[_Task] = deque()
        self._workers: list[_Worker] = []
        self._fn_ids: dict[bytes, int] = {}
        self._next_fn_id = 0
        self._next_key = 0
        self._turns = PollTurns()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        _launch.ENGINE_FDS.update((self._wake_r, self._wake_w))
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            for _ in range(workers):
                self._add_worker(self._start_worker())
        except BaseException:
            self._close_everything()
            raise
        self._thread = threading.Thread(target=self._io_loop, name="manycore-io", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------- caller side

    @property
    def state(self) -> EngineState:
        return self._state

    def submit(self, batch: Batch, done: Done) -> None:
        """Queue ``batch``; ``done`` is called exactly once from the I/O thread.

        Pickling happens here, in the caller's thread, so that an argument that
        cannot be pickled raises at once and names itself.
        """
        fn_blob = batch.fn_blob if batch.fn_blob is not None else dumps_fn(batch.fn)
        try:
            body = dumps((batch.items, batch.kwargs))
        except Exception:
            raise self._unpicklable(batch) from None
        with self._lock:
            if self._state is not EngineState.RUNNING:
                raise self._refusal()
            fn_id = self._fn_ids.get(fn_blob)
            if fn_id is None:
                if len(self._fn_ids) >= _FN_LIMIT:
                    self._fn_ids.clear()  # ids are never reused: this only re-sends
                self._next_fn_id += 1
                fn_id = self._fn_ids[fn_blob] = self._next_fn_id
            self._pending.append(_Task(batch, done, fn_id, fn_blob, body))
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
        task.done(batch, CancelledError())
        return True

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        with self._lock:
            if self._state in (EngineState.RUNNING, EngineState.BROKEN):
                self._state = EngineState.CLOSING
            cancelled = list(self._pending) if cancel_pending else []
            if cancel_pending:
                self._pending.clear()
        for task in cancelled:
            task.done(task.batch, CancelledError())
        self._turns.close()
        self._wake()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def terminate(self) -> None:
        """Kill every worker now; what was running fails with CancelledError."""
        with self._lock:
            self._state = EngineState.CLOSING
            tasks = list(self._pending)
            self._pending.clear()
            for w in self._workers:
                tasks.extend(w.inflight)
                w.inflight.clear()
                w.proc.kill()
        for task in tasks:
            task.done(task.batch, CancelledError())
        self._turns.close()
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(_STOP_GRACE * 2)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._workers]

    def _refusal(self) -> Exception:
        if self._state is EngineState.BROKEN:
            err = PoolBroken(f"the pool is broken: a worker's init failed ({self._broken!r})")
            err.__cause__ = self._broken
            return err
        return PoolClosed("the pool has been shut down and accepts no new work")

    def _unpicklable(self, batch: Batch) -> Exception:
        if batch.submit:
            err = describe_unpicklable(batch.items[0], batch.kwargs, "argument")
        else:
            err = None
            for offset, item in enumerate(batch.items):
                err = describe_unpicklable([item], None, f"input item {batch.start + offset}:")
                if err is not None:
                    break
        if err is None:
            from ._errors import SerializationError

            err = SerializationError("cannot pickle the task's arguments")
        return err

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or already closed

    # ------------------------------------------------------------- dispatch

    def _dispatch_locked(self) -> None:
        pending = self._pending
        while pending:
            best: _Worker | None = None
            for w in self._workers:
                n = len(w.inflight)
                if n < _DEPTH and (best is None or n < len(best.inflight)):
                    best = w
                    if n == 0:
                        break
            if best is None:
                return
            task = pending.popleft()
            claim = task.batch.claim
            if claim is not None and not claim():
                continue  # its future was cancelled while it waited
            self._send_locked(best, task)

    def _send_locked(self, w: _Worker, task: _Task) -> None:
        fn_blob = None
        reset = False
        if task.fn_id not in w.known:
            if len(w.known) >= _FN_LIMIT:
                w.known.clear()
                reset = True
            w.known.add(task.fn_id)
            fn_blob = task.fn_blob
        batch = task.batch
        self._next_key += 1
        head = pickle.dumps((self._next_key, task.fn_id, fn_blob, reset, batch.star), 5)
        size = _HEAD.size + len(head) + len(task.body)
        prefix = _wire.HEADER.pack(size) + _HEAD.pack(len(head)) + head
        w.inflight.append(task)
        if len(task.body) < 65536:
            self._write_locked(w, [prefix + task.body])
        else:
            self._write_locked(w, [prefix, task.body])

    def _write_locked(self, w: _Worker, buffers: list[bytes]) -> None:
        if not w.out:
            try:
                written = os.writev(w.task_fd, buffers)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # the worker is gone; EOF on its result pipe will tell
            for buf in buffers:
                if written >= len(buf):
                    written -= len(buf)
                    continue
                w.out.append(memoryview(buf)[written:])
                written = 0
            if not w.out:
                return
            self._wake()  # the I/O thread registers write interest
        else:
            w.out.extend(memoryview(b) for b in buffers)

    # ------------------------------------------------------------- I/O thread

    def _io_loop(self) -> None:
        turns = self._turns
        turns.io_ident = threading.get_ident()
        try:
            while True:
                turns.io_wait_turn(self._has_work)
                with turns.lock:
                    turns.holder = turns.io_ident
                    while True:
                        if self._io_step(None):
                            return
                        if turns.io_should_yield() or not (turns.closing or self._has_work()):
                            break
                    turns.holder = None
        finally:
            self._close_everything()

    def _has_work(self) -> bool:
        with self._lock:
            return bool(self._pending) or any(w.inflight or w.out for w in self._workers)

    def wait_for(self, future: Future[Any], timeout: float | None) -> None:
        """Block until ``future`` is done or ``timeout`` passes, polling if we can."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.drive(future.done, deadline):
            with self._turns.passive():
                left = None if deadline is None else deadline - time.monotonic()
                futures_wait([future], left)

    def drive(self, until: Callable[[], bool], deadline: float | None = None) -> bool:
        """Poll the engine in this thread until ``until()`` holds or ``deadline`` passes.

        Returns False, having waited for nothing, when another caller is polling:
        the caller must then wait passively (inside ``passive()``), and that other
        caller or the I/O thread delivers its results.
        """
        if until():
            return True
        turns = self._turns
        turns.enter_driver()
        driving = turns.lock.acquire(blocking=False)
        if not driving and turns.holder == turns.io_ident:
            self._wake()  # ask the I/O thread to step aside; it releases the lock
            patience = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            driving = turns.lock.acquire(timeout=patience)
        if not driving:
            turns.leave_driver()
            return False
        try:
            turns.holder = threading.get_ident()
            while not until() and self._state is not EngineState.CLOSED:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or self._io_step(left):
                    break
        finally:
            turns.holder = None
            turns.lock.release()
            turns.leave_driver()
        return True

    def passive(self) -> AbstractContextManager[None]:
        """Context for a caller that waits without polling (see :meth:`drive`)."""
        return self._turns.passive()

    def _io_step(self, timeout: float | None) -> bool:
        """One turn of polling; True when the engine is finished."""
        with self._lock:
            if self._state is EngineState.CLOSED:
                return True
            if self._state is not EngineState.RUNNING and self._idle_locked():
                return True
        events = self._selector.select(timeout)
        completions: list[tuple[_Task, BatchResult | BaseException]] = []
        dead: list[_Worker] = []
        for key, mask in events:
            w = key.data
            if w is None:
                self._drain_wake()
                continue
            if mask & selectors.EVENT_READ:
                self._read(w, completions, dead)
            if mask & selectors.EVENT_WRITE:
                with self._lock:
                    self._flush_locked(w)
        for w in dead:
            self._bury(w, completions)
        with self._lock:
            self._dispatch_locked()
            self._update_write_interest_locked()
            finished = self._state is not EngineState.RUNNING and self._idle_locked()
        for task, result in completions:
            task.done(task.batch, result)
        return finished

    def _idle_locked(self) -> bool:
        if self._state is EngineState.BROKEN:
            return False
        return not self._pending and not any(w.inflight for w in self._workers)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _read(
        self,
        w: _Worker,
        completions: list[tuple[_Task, BatchResult | BaseException]],
        dead: list[_Worker],
    ) -> None:
        try:
            data = os.read(w.result_fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            dead.append(w)
            return
        for payload in w.frames.feed(data):
            message = pickle.loads(payload)
            if message[0] == _wire.INIT_FAILED:
                self._break(rebuild(message[1]), completions)
                continue
            _, _key, values, failures, elapsed = message
            errors = {i: rebuild(e) for i, e in failures.items()} if failures else None
            with self._lock:
                task = w.inflight.popleft()
            completions.append((task, BatchResult(values, errors, elapsed)))

    def _flush_locked(self, w: _Worker) -> None:
        try:
            while w.out:
                view = w.out[0]
                n = os.write(w.task_fd, view)
                if n < len(view):
                    w.out[0] = view[n:]
                    return
                w.out.popleft()
        except BlockingIOError:
            return
        except OSError:
            w.out.clear()  # the worker is gone; its EOF is handled by _read

    def _update_write_interest_locked(self) -> None:
        for w in self._workers:
            want = bool(w.out)
            if want != w.writing:
                if want:
                    self._selector.register(w.task_fd, selectors.EVENT_WRITE, w)
                else:
                    self._selector.unregister(w.task_fd)
                w.writing = want

    def _break(
        self, error: BaseException, completions: list[tuple[_Task, BatchResult | BaseException]]
    ) -> None:
        """A worker's init failed: fail everything, start nothing more."""
        err = PoolBroken(f"a worker's init function raised {error!r}; the pool is broken")
        err.__cause__ = error
        with self._lock:
            if self._state is EngineState.RUNNING:
                self._state = EngineState.BROKEN
                self._broken = error
            tasks = list(self._pending)
            self._pending.clear()
            for w in self._workers:
                tasks.extend(w.inflight)
                w.inflight.clear()
        completions.extend((t, err) for t in tasks)

    def _bury(
        self, w: _Worker, completions: list[tuple[_Task, BatchResult | BaseException]]
    ) -> None:
        """A worker's result pipe closed: it died. Fail its batches, replace it."""
        exitcode = w.proc.wait(1.0)
        if exitcode is None:
            w.proc.kill()
            exitcode = w.proc.wait(1.0)
        with self._lock:
            self._workers.remove(w)
            lost = list(w.inflight)
            w.inflight.clear()
            replace = self._state is EngineState.RUNNING
        self._release(w)
        if replace:
            try:
                fresh = self._start_worker()
            except Exception as exc:  # cannot start processes any more: fail loudly
                self._break(exc, completions)
            else:
                with self._lock:
                    self._add_worker(fresh)
        for task in lost:
            batch = task.batch
            what = (
                f"input item {batch.start}"
                if len(batch) == 1
                else f"one of input items {batch.start}..{batch.start + len(batch) - 1}"
            )
            err = WorkerCrashed(
                f"worker process {w.proc.pid} died ({describe_exit(exitcode)}) while "
                f"running {what}. If it ran out of memory, use fewer workers or smaller "
                "inputs; if a C extension crashed, try the function alone on that input.",
                exitcode=exitcode,
                index=batch.start if len(batch) == 1 else None,
            )
            completions.append((task, err))

    # ------------------------------------------------------------ processes

    def _start_worker(self) -> _Worker:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        fds = (task_r, task_w, result_r, result_w)
        _launch.ENGINE_FDS.update(fds)
        try:
            _wire.enlarge_pipe(task_w)
            _wire.enlarge_pipe(result_w)
            proc = _launch.launch(self.start_method, task_r, result_w)
        except BaseException:
            _close_fd(task_w)
            _close_fd(result_r)
            raise
        finally:
            _close_fd(task_r)
            _close_fd(result_w)
        config = pickle.dumps((_wire.CONFIG, self._init_blob), 5)
        # The pipe is empty and large: this first small write never blocks.
        _wire.write_all(task_w, _wire.frame(config))
        os.set_blocking(task_w, False)
        os.set_blocking(result_r, False)
        return _Worker(proc, task_w, result_r)

    def _add_worker(self, w: _Worker) -> None:
        self._workers.append(w)
        self._selector.register(w.result_fd, selectors.EVENT_READ, w)

    def _release(self, w: _Worker) -> None:
        for fd, registered in ((w.result_fd, True), (w.task_fd, w.writing)):
            if registered:
                try:
                    self._selector.unregister(fd)
                except (KeyError, ValueError):
                    pass
            _close_fd(fd)
        w.writing = False

    def _close_everything(self) -> None:
        with self._turns.lock, self._lock:
            if self._state is EngineState.CLOSED:
                return
            self._state = EngineState.CLOSED
            workers = list(self._workers)
            self._workers.clear()
            # Normally nothing is left here; if the I/O thread died of a bug,
            # fail what remains rather than leave its callers waiting forever.
            orphans = list(self._pending)
            self._pending.clear()
            for w in workers:
                orphans.extend(w.inflight)
                w.inflight.clear()
        for task in orphans:
            task.done(task.batch, PoolBroken("the pool stopped before this task finished"))
        # Closing the task pipe is the stop signal: the worker reads end of file.
        for w in workers:
            _close_fd(w.task_fd)
        for w in workers:
            if w.proc.wait(_STOP_GRACE) is None:
                w.proc.kill()
                w.proc.wait(_STOP_GRACE)
            _close_fd(w.result_fd)
        self._selector.close()
        _close_fd(self._wake_r)
        _close_fd(self._wake_w)


def _close_fd(fd: int) -> None:
    _launch.ENGINE_FDS.discard(fd)
    try:
        os.close(fd)
    except OSError:
        pass
