"""The asyncio backend's calls, and running them on the caller's event loop.

Work awaited from a running event loop (``await pool.submit(...)``, ``await
mc.amap(...)``) runs there, on the caller's loop, not on the pool's own: objects
bound to the caller's loop (an ``aiohttp.ClientSession``, an ``asyncio.Lock``, a
future) then work inside the tasks. The pool's loop still does the bookkeeping
(slots, timeouts, cancelling); only the coroutine itself runs on the caller's
loop, and it is cancelled there when its item times out or is killed. A pool
with an ``init`` keeps to its own loop: the state ``init`` made (a session, a
connection) is bound to that loop.

A call that runs on a loop cannot be waited for by blocking that same loop:
``future.result()`` there raises instead of waiting forever (see
:class:`LoopFuture`).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import sys
import threading
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, TypeVar

from manycore._core import AwaitableFuture, Batch, task_state

if TYPE_CHECKING:
    import asyncio

    from manycore.backends.aio import AsyncioBackend

__all__ = [
    "LoopFuture",
    "awaited_from",
    "awaiting_loop",
    "call",
    "call_at",
    "from_the_call",
    "running_loop",
]

T = TypeVar("T")
_CHECK_CLOSED = 1.0  # seconds between checks that the caller's loop is still there

# The event loop awaiting the maps started from this context (an amap's thread).
_AWAITED_FROM: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "manycore_awaited_from", default=None
)


@contextlib.contextmanager
def awaited_from(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """The maps started in this block are awaited by a coroutine on ``loop``
    (``mc.amap``'s thread says so): an asyncio pool runs their items there."""
    token = _AWAITED_FROM.set(loop)
    try:
        yield
    finally:
        _AWAITED_FROM.reset(token)


def awaiting_loop() -> asyncio.AbstractEventLoop | None:
    return _AWAITED_FROM.get()


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    if "asyncio" not in sys.modules:
        return None  # never imported: no loop can be running
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def call(batch: Batch, offset: int) -> Awaitable[object]:
    """What ``fn`` returns for item ``offset``: an awaitable, or a TypeError saying why not."""
    args = batch.items[offset]
    if batch.kwargs:
        out = batch.fn(*args, **batch.kwargs)
    elif batch.star:
        out = batch.fn(*args)
    else:
        out = batch.fn(args)
    if not inspect.isawaitable(out):
        name = getattr(batch.fn, "__qualname__", None) or repr(batch.fn)
        raise TypeError(
            f"{name} returned {type(out).__name__}, not an awaitable: backend='asyncio' "
            "runs async functions (async def)"
        )
    return out


async def call_at(
    home: asyncio.AbstractEventLoop, batch: Batch, offset: int, view: tuple[object, object]
) -> object:
    """On the pool's loop: item ``offset`` run on ``home`` (the caller's loop),
    its outcome awaited here. Cancelling this cancels the call there."""
    import asyncio

    coroutine = _at_home(batch, offset, view)
    try:
        running = asyncio.run_coroutine_threadsafe(coroutine, home)
    except RuntimeError:  # the loop has closed
        coroutine.close()  # (never started: no "never awaited" warning)
        raise RuntimeError(_closed(batch, offset)) from None
    outcome = asyncio.wrap_future(running)
    try:
        while True:
            # A loop closed with the call still waiting to start there would
            # never settle it: look now and then.
            done, _ = await asyncio.wait([outcome], timeout=_CHECK_CLOSED)
            if done:
                return outcome.result()
            if home.is_closed():
                raise RuntimeError(_closed(batch, offset))
    finally:
        if outcome.done():
            pass
        elif not home.is_closed():
            outcome.cancel()  # a timeout or a kill: the call is cancelled on its loop too
        elif inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
            coroutine.close()  # it never started there: no "never awaited" warning


async def _at_home(batch: Batch, offset: int, view: tuple[object, object]) -> object:
    task_state.set_task(*view)  # mc.worker_state() and mc.shared() in the call
    return await call(batch, offset)


def from_the_call(exc: BaseException) -> BaseException:
    """A call's error with its traceback starting at the call, not at the relay
    between the two loops (:func:`call_at`, ``_at_home``)."""
    tb = exc.__traceback__
    relay = (call_at.__code__, _at_home.__code__)
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code in relay:
        tb = tb.tb_next
    try:
        exc.__traceback__ = tb
    except (AttributeError, TypeError):
        pass  # an exception class that refuses it: its traceback stays whole
    return exc


def _closed(batch: Batch, offset: int) -> str:
    return (
        f"{batch.name_item(offset)} was to run on the event loop that awaits it, which "
        "has closed: await the work before that loop ends"
    )


class LoopFuture(AwaitableFuture[T]):
    """A ``submit()`` future of an asyncio pool. Waiting for it with ``result()``
    on the loop that runs its call (the pool's own, or the caller's loop that
    submitted it) would stop the loop that is to settle it: that raises. ``home``:
    the loop its call runs on, as the backend's ``origin()`` gave it (None: the
    pool's own); only ever compared with the running loop."""

    def __init__(self, backend: AsyncioBackend, home: object):
        super().__init__()
        self._backend = backend
        self._home = home

    def check_blocking_wait(self, what: str) -> None:
        if self.done():
            return
        if threading.current_thread() is self._backend._thread:  # noqa: SLF001 - this layer: the asyncio backend's loop thread
            raise RuntimeError(
                f"{what} inside a task of the same asyncio pool would block its "
                "event loop, the one that is to settle the future, forever; "
                "use `await pool.submit(...)`"
            )
        if self._home is not None and running_loop() is self._home:
            raise RuntimeError(
                f"{what} on the event loop that submitted the call would block "
                "that loop, which runs the call, forever: use `await future` (or asyncio.wait, "
                "asyncio.gather over the futures; an asyncio "
                "pool runs work submitted from a coroutine on that coroutine's loop)"
            )

    def result(self, timeout: float | None = None) -> T:
        self.check_blocking_wait("future.result()")
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self.check_blocking_wait("future.exception()")
        return super().exception(timeout)
