"""One ``Pool.submit()`` call: its batch sent, retried after a backoff when its
error is one to retry, and its future settled with the outcome."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from manycore._core import AwaitableFuture, Batch, BatchResult, PoolBroken, PoolClosed
from manycore._scheduler._maprun import Policy

if TYPE_CHECKING:
    from manycore._api import Pool

__all__ = ["Submission", "fail", "settle"]

# Errors that end a submit() at once, whatever retry_on says: the pool's own state.
_NOT_RETRIED = (PoolClosed, PoolBroken, CancelledError)


class Submission:
    """One ``submit()`` call: sends its batch, and again for each retry.

    An object, not closures that call each other: those made a reference cycle
    through the future, which then kept the result alive after the user dropped
    it, until the cyclic GC ran. The backend holds ``done`` only while the batch
    runs, and a retry's timer holds ``launch`` only while it waits.
    """

    def __init__(
        self,
        pool: Pool,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: Policy,
        fn_blob: bytes | None,
        on_batch: Callable[[Batch], None] | None,
    ):
        self.pool = pool
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs or None
        self.policy = policy
        self.fn_blob = fn_blob
        self.on_batch = on_batch
        self.attempts = 0
        self.origin: Any = None  # the backend's origin() when submit() was called
        if isinstance(future, AwaitableFuture):
            future.on_abandoned = stopper(pool)

    def launch(self, first: bool) -> None:
        pool, future, policy = self.pool, self.future, self.policy
        batch = Batch(
            self.fn, [self.args], 0, True, self.kwargs, submit=True, timeout=policy.timeout
        )
        batch.fn_blob = self.fn_blob
        batch.origin = self.origin
        batch.claim = future.set_running_or_notify_cancel if first else still_wanted(future)
        if self.on_batch is not None:
            self.on_batch(batch)
        with pool._lock:
            pool._batches[future] = batch
            if policy.retries:
                pool._may_retry.add(future)
        try:
            pool._backend.submit(batch, self.done)
        except BaseException:
            pool._forget(future)
            raise

    def done(self, batch: Batch, result: BatchResult | BaseException) -> None:
        policy, future = self.policy, self.future
        self.pool._recorder.record(batch, result)
        error: Any = result
        if isinstance(result, BatchResult):
            error = result.failures.get(0) if result.failures else None
        if (
            isinstance(error, policy.retry_on)
            and not isinstance(error, _NOT_RETRIED)
            and self.attempts < policy.retries
            and not future.done()
        ):
            self.attempts += 1
            self.pool._later(policy.backoff(self.attempts), future, self._retry)
            return
        settle(future, result)

    def _retry(self) -> None:
        self.launch(False)


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


def fail(future: Future[Any], exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except InvalidStateError:
        pass  # settled meanwhile by another thread


def stopper(pool: Pool) -> Callable[[Future[Any]], object]:
    """What stops a call whose awaiting task was cancelled: ``pool.cancel(future,
    force=True)``. (The pool by a weak reference: the future must not keep it.)"""
    ref = weakref.ref(pool)

    def stop(future: Future[Any]) -> None:
        alive = ref()
        if alive is not None:
            alive.cancel(future, force=True)

    return stop


def still_wanted(future: Future[Any]) -> Callable[[], bool]:
    """The claim of a retry: run it unless the future was settled meanwhile."""
    return lambda: not future.done()
