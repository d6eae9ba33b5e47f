"""The futures manycore hands out: standard ``concurrent.futures.Future`` objects
that can also be awaited.

``await pool.submit(f, x)`` and ``await task(x)`` work inside a running event
loop: awaiting wraps the future with :func:`asyncio.wrap_future`, so the loop is
never blocked; ``result()``, ``wait()`` and ``as_completed()`` work as usual.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from concurrent.futures import Future
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from manycore._engine._engine import ProcessEngine

__all__ = ["AwaitableFuture", "EngineFuture"]

T = TypeVar("T")


class AwaitableFuture(Future[T]):
    """A ``concurrent.futures.Future`` that is also awaitable.

    ``on_abandoned``: told when a task awaiting the future is cancelled before it
    is done (the pool stops the call where it can, as ``mc.amap`` does, and as
    cancelling a task that awaits an asyncio task cancels that task)."""

    on_abandoned: Callable[[AwaitableFuture[T]], object] | None = None

    def __await__(self) -> Generator[object, None, T]:
        import asyncio  # here: importing it costs start-up time nobody else needs

        try:
            return (yield from asyncio.wrap_future(self).__await__())
        except asyncio.CancelledError:
            stop = self.on_abandoned
            if stop is not None and not self.done():
                stop(self)
            raise

    def check_blocking_wait(self, what: str) -> None:
        """Raise if ``what`` (a blocking wait for this future in the calling
        thread) could never end: nothing here; see the asyncio backend's."""


class EngineFuture(AwaitableFuture[T]):
    """A ``Future`` whose ``result()`` reads its own result from the pipes.

    See :mod:`manycore._engine._turns`: the waiting thread polls the engine itself when it
    can, which saves the hand-off through the I/O thread on every round trip.
    """

    def __init__(self, engine: ProcessEngine):
        super().__init__()
        self._engine = engine

    def cancel(self) -> bool:
        # A thread waiting in result() may be the one polling the engine, asleep
        # in select() until some worker event: wake it to see the cancellation.
        cancelled = super().cancel()
        if cancelled:
            self._engine.wake()
        return cancelled

    def result(self, timeout: float | None = None) -> T:
        return super().result(self._wait(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return super().exception(self._wait(timeout))

    def _wait(self, timeout: float | None) -> float | None:
        """Poll until done or ``timeout``; the time left, for the base class."""
        if self.done():
            return timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        self._engine.wait_for(self, timeout)
        return None if deadline is None else max(0.0, deadline - time.monotonic())
