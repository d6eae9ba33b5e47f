"""``submit()`` calls: each one's batch sent, retried after a backoff when its
error is one to retry, and its future settled with the outcome. :class:`Scheduler`
keeps the calls of one pool (to cancel them, and to settle them at shutdown), and
one thread that sends their retries as they fall due (see ``_retries``)."""

from __future__ import annotations

import threading
import types
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import wait as futures_wait
from typing import Any, TypeVar

from manycore._core import (
    AwaitableFuture,
    Batch,
    BatchResult,
    PoolClosed,
    is_pool_broken,
    pool_closed,
)
from manycore._observe import StatsRecorder
from manycore._scheduler._maprun import InputSource, MapRun
from manycore._scheduler._options import CallOptions
from manycore._scheduler._retries import Retries
from manycore._transport import dumps_fn
from manycore.backends import Backend

__all__ = ["Scheduler", "Submission", "fail", "settle"]

T = TypeVar("T")

# Errors that end a submit() at once, whatever retry_on says: the pool's own state.
_NOT_RETRIED = (PoolClosed, CancelledError)  # and PoolBroken (is_pool_broken)


class Scheduler:
    """The ``submit()`` calls of one pool on ``backend``: the batches of calls not
    yet settled (to kill one), and the retries waiting out their backoff."""

    def __init__(
        self, backend: Backend, recorder: StatsRecorder, gate: Callable[[], None] = lambda: None
    ):
        self.backend = backend
        self.recorder = recorder
        self.gate = _held_weakly(gate)  # raises when the pool takes no new work (closed, forked)
        self._lock = threading.Lock()
        self._batches: dict[Future[Any], Batch] = {}  # futures not yet settled
        self._may_retry: weakref.WeakSet[Future[Any]] = weakref.WeakSet()
        self._retries: Retries[Future[Any], Submission] = Retries()
        self._due = threading.Condition(self._lock)  # wakes the retry thread
        self._sender: threading.Thread | None = None  # the retry thread, while one waits
        self.stopper = stopper(self)  # each submit() future's on_abandoned

    def submit(
        self,
        fn: Callable[..., object],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        policy: CallOptions,
        fn_blob: bytes | None = None,
        on_batch: Callable[[Batch], None] | None = None,
    ) -> Future[Any]:
        """``fn_blob``: ``fn`` pickled already (a task's, pickled once for all its
        calls). ``on_batch``: told each batch sent for this call (a retry sends another)."""
        self.gate()
        origin = self.backend.origin()
        future: Future[Any] = self.backend.new_future(origin)
        future.add_done_callback(self.forget)
        submission = Submission(self, future, fn, args, kwargs, policy, fn_blob, on_batch)
        submission.origin = origin
        submission.launch(True)
        return future

    def run(
        self,
        fn: Callable[..., object],
        source: InputSource,
        options: CallOptions,
        recorders: Sequence[StatsRecorder],
    ) -> MapRun:
        """A map run of ``fn`` over what ``source`` hands out (iterate it)."""
        fn_blob = dumps_fn(fn) if self.backend.needs_pickling else None
        return MapRun(self.backend, fn, source, options, None, fn_blob, recorders)

    def cancel(self, future: Future[Any], force: bool) -> bool:
        """``Pool.cancel``: True if the call will not complete."""
        if future.cancel():
            return True
        with self._lock:  # a retry waiting out its backoff is simply not run
            waiting = self._retries.cancel(future)
        if waiting is not None:
            fail(future, CancelledError())
            self.backend.wake()
            return True
        if not force or future.done() or not self.backend.supports_kill:
            return False
        with self._lock:
            batch = self._batches.get(future)
        return batch is not None and self.backend.kill(batch)

    def sent(self, future: Future[Any], batch: Batch, may_retry: bool) -> None:
        with self._lock:
            self._batches[future] = batch
            if may_retry:
                self._may_retry.add(future)

    def forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._batches.pop(future, None)
            self._retries.forget(future)

    def retry_later(self, call: Submission, error: object) -> bool:
        """Book ``call``'s retry after ``error`` if its options retry it (else False:
        it settles now); the retry thread sends it when its backoff has passed."""
        future = call.future
        with self._lock:
            if not self._retries.book(future, error, call.policy, call):
                return False
            if future.done():  # settled meanwhile: its done callback may have run already
                self._retries.forget(future)
            elif self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_retries, name="manycore-retries", daemon=True
                )
                self._sender.start()
            else:
                self._due.notify()
        return True

    def _send_retries(self) -> None:
        """The retry thread: sends each booked retry when it falls due; it ends when
        none is left waiting (the next one booked starts it anew)."""
        while self._send_due():
            pass

    def _send_due(self) -> bool:
        """Wait for the next retries to fall due and send them; False if none waits.
        (A method of its own: no local holds a sent call while the thread waits.)"""
        with self._lock:
            due = self._retries.due()
            while not due and self._retries:
                self._due.wait(self._retries.wait())
                due = self._retries.due()
            if not due:
                self._sender = None
                return False
        for call in due:
            self._send(call)
        return True

    def _send(self, call: Submission) -> None:
        if self.backend.concurrent:
            call.resend()
        else:  # the backend runs it in this thread: it must not hold up the others
            threading.Thread(target=call.resend, name="manycore-retry", daemon=True).start()

    def settle_retries(self, wait: bool) -> None:
        """Before the backend closes: let calls that may still be retried finish
        (``wait``; not those that run on this thread's event loop, which waiting
        would stop: their retry fails with PoolClosed), or cancel the retries
        waiting out a backoff."""
        if wait:
            while True:
                with self._lock:
                    retried = [f for f in self._batches if f in self._may_retry]
                    futures = [f for f in retried if not self.backend.runs_here(self._batches[f])]
                if not futures:
                    return
                futures_wait(futures)
        with self._lock:
            waiting = self._retries.drain()
            self._due.notify()  # the retry thread ends
        for call in waiting:
            fail(call.future, CancelledError())  # it counts as running: not cancel()
        if waiting:
            self.backend.wake()


class Submission:
    """One ``submit()`` call: sends its batch, and again for each retry.

    An object, not closures that call each other: those made a reference cycle
    through the future, which then kept the result alive after the user dropped
    it, until the cyclic GC ran. The backend holds ``done`` only while the batch
    runs, and the scheduler's retries hold the call only while its retry waits.
    """

    def __init__(
        self,
        owner: Scheduler,
        future: Future[Any],
        fn: Callable[..., object],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        policy: CallOptions,
        fn_blob: bytes | None,
        on_batch: Callable[[Batch], None] | None,
    ):
        self.owner = owner
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs or None
        self.policy = policy
        self.fn_blob = fn_blob
        self.on_batch = on_batch
        self.origin: object = None  # the backend's origin() when submit() was called
        if isinstance(future, AwaitableFuture):
            future.on_abandoned = owner.stopper

    def launch(self, first: bool) -> None:
        owner, future, policy = self.owner, self.future, self.policy
        batch = Batch(
            self.fn, [self.args], 0, True, self.kwargs, submit=True, timeout=policy.timeout
        )
        batch.fn_blob = self.fn_blob
        batch.origin = self.origin
        batch.claim = future.set_running_or_notify_cancel if first else still_wanted(future)
        if self.on_batch is not None:
            self.on_batch(batch)
        owner.sent(future, batch, bool(policy.retries))
        try:
            owner.backend.submit(batch, self.done)
        except BaseException:
            owner.forget(future)
            raise

    def done(self, batch: Batch, result: BatchResult | BaseException) -> None:
        future = self.future
        self.owner.recorder.record(batch, result)
        error: object = result
        if isinstance(result, BatchResult):
            error = result.failures.get(0) if result.failures else None
        if error is None or isinstance(error, _NOT_RETRIED) or is_pool_broken(error):
            settle(future, result)  # (a success is never retried: no lock to take)
        elif not self.owner.retry_later(self, error):
            settle(future, result)

    def resend(self) -> None:
        """Send the call again (its retry fell due)."""
        try:
            self.launch(False)
        except BaseException as exc:  # the pool closed meanwhile, ...
            fail(self.future, exc)
            self.owner.backend.wake()  # a caller may be polling for this future


def settle(future: Future[Any], result: BatchResult | BaseException) -> None:
    """Give a submit() future its outcome (from whichever thread reports it)."""
    if isinstance(result, CancelledError):
        if future.cancel():
            # cancel() alone does not wake wait()/as_completed(); this does.
            try:
                future.set_running_or_notify_cancel()
            except RuntimeError:
                pass  # already notified
        elif not future.done():  # it was running: the cancellation is its error
            future.set_exception(result)
        return
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    elif result.failures:
        future.set_exception(result.failures[0])
    else:
        future.set_result(result.values[0])


def fail(future: Future[T], exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except InvalidStateError:
        pass  # settled meanwhile by another thread


def stopper(owner: Scheduler) -> Callable[[Future[Any]], object]:
    """What stops a call whose awaiting task was cancelled: ``pool.cancel(future,
    force=True)``. (The owner by a weak reference: the future must not keep it.)"""
    ref = weakref.ref(owner)

    def stop(future: Future[Any]) -> None:
        alive = ref()
        if alive is not None:
            alive.cancel(future, force=True)

    return stop


def still_wanted(future: Future[T]) -> Callable[[], bool]:
    """The claim of a retry: run it unless the future was settled meanwhile."""
    return lambda: not future.done()


def _held_weakly(gate: Callable[[], None]) -> Callable[[], None]:
    """``gate``, not keeping its object alive when it is a bound method. It is the
    method of the pool that holds this scheduler: held strongly, the pair is a
    cycle, and a pool dropped without shutdown() keeps its workers (and their I/O
    thread) until the garbage collector runs, not until its finalizer would."""
    if not isinstance(gate, types.MethodType):
        return gate
    owner, func = weakref.ref(gate.__self__), gate.__func__

    def check() -> None:
        alive = owner()
        if alive is None:
            raise pool_closed()  # its pool is gone: nobody can shut it down, or reopen it
        func(alive)

    return check
