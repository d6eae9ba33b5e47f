"""The futures manycore hands out: standard ``concurrent.futures.Future`` objects
that can also be awaited.

``await pool.submit(f, x)`` and ``await task(x)`` work inside a running event
loop: awaiting wraps the future with :func:`asyncio.wrap_future`, so the loop is
never blocked; ``result()``, ``wait()`` and ``as_completed()`` work as usual.
"""

from __future__ import annotations

from collections.abc import Generator
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["AwaitableFuture"]

T = TypeVar("T")


class AwaitableFuture(Future[T]):
    """A ``concurrent.futures.Future`` that is also awaitable."""

    def __await__(self) -> Generator[Any, None, T]:
        import asyncio  # here: importing it costs start-up time nobody else needs

        return asyncio.wrap_future(self).__await__()
