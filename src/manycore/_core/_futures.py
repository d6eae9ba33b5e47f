"""The futures manycore hands out: standard ``concurrent.futures.Future`` objects
that can also be awaited.

``await pool.submit(f, x)`` and ``await task(x)`` work inside a running event
loop: awaiting wraps the future with :func:`asyncio.wrap_future`, so the loop is
never blocked; ``result()``, ``wait()`` and ``as_completed()`` work as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED
from typing import TypeVar

__all__ = ["AwaitableFuture"]

T = TypeVar("T")

# The states of a done future, as Future.done() lists them.
_SETTLED = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED})


class AwaitableFuture(Future[T]):
    """A ``concurrent.futures.Future`` that is also awaitable.

    ``on_abandoned``: told when a task awaiting the future is cancelled before it
    is done (the pool stops the call where it can, as ``mc.amap`` does, and as
    cancelling a task that awaits an asyncio task cancels that task)."""

    on_abandoned: Callable[[AwaitableFuture[T]], object] | None = None

    def done(self) -> bool:
        # Without the base class's lock: one read of the state says as much (it may
        # change the moment after either way), and a round trip asks several times.
        return self._state in _SETTLED

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
