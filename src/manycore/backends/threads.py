"""``backend="threads"``: the standard library's thread pool.

Good for I/O-bound work and for functions that release the GIL (NumPy, most I/O).
Threads cannot be killed, so this backend does not support stopping a running task.
"""

from __future__ import annotations

from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

from .._batch import Batch, BatchResult, run_batch
from .._errors import PoolBroken, PoolClosed
from ._base import Backend, BackendOptions, Done, register_backend

__all__ = ["ThreadBackend"]

_CATCH = (Exception, SystemExit, KeyboardInterrupt)


@register_backend
class ThreadBackend(Backend):
    name = "threads"

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        self._init_error: BaseException | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=options.workers,
            thread_name_prefix="manycore-thread",
            initializer=self._init if options.init is not None else None,
        )
        self._futures: dict[Batch, Future[Any]] = {}

    def submit(self, batch: Batch, done: Done) -> None:
        try:
            fut = self._executor.submit(self._run, batch)
        except BrokenThreadPool as exc:
            raise self._broken(exc) from None
        except RuntimeError as exc:
            raise PoolClosed("the pool has been shut down and accepts no new work") from exc
        self._futures[batch] = fut
        if fut.done():  # it finished before it was recorded: do not keep it
            self._futures.pop(batch, None)

        def finished(f: Future[Any]) -> None:
            self._futures.pop(batch, None)
            if f.cancelled():
                done(batch, CancelledError())
                return
            exc = f.exception()
            if isinstance(exc, BrokenThreadPool):
                done(batch, self._broken(exc))
            elif exc is not None:
                done(batch, exc)
            else:
                result: BatchResult | None = f.result()
                if result is not None:
                    done(batch, result)

        fut.add_done_callback(finished)

    def _init(self) -> None:
        # The executor reports only "broken"; keep the init's own error to chain it.
        assert self.options.init is not None
        try:
            self.options.init(*self.options.init_args)
        except BaseException as exc:
            self._init_error = exc
            raise

    def _broken(self, exc: BaseException) -> PoolBroken:
        err = PoolBroken(
            f"a worker's init function raised {self._init_error!r}; the pool is broken"
        )
        err.__cause__ = self._init_error or exc
        return err

    @staticmethod
    def _run(batch: Batch) -> BatchResult | None:
        if batch.claim is not None and not batch.claim():
            return None
        return run_batch(batch.fn, batch.items, batch.star, batch.kwargs, _CATCH)

    def cancel(self, batch: Batch) -> bool:
        fut = self._futures.get(batch)
        return fut is not None and fut.cancel()

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=cancel_pending)
