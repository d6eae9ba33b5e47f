"""``await mc.amap(...)`` and ``async for x in mc.aimap(...)``: a map called from a
running event loop that never blocks it.

The map is the ordinary one (any backend, every option of ``mc.map``); it runs in
a thread of its own, which also builds the pool (starting processes takes a
while), and its results reach the caller's loop through ``call_soon_threadsafe``.
Cancelling the awaiting task (Ctrl-C under ``asyncio.run`` does) stops the map:
what has not started is dropped, and what runs for it is killed where the
backend can (processes: the worker is replaced; asyncio: the coroutine is
cancelled; threads: the call finishes in the background, its result dropped).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from typing import Any, TypeVar, cast

from manycore._api import _validate as v
from manycore._api._calls import check_call, lease_for_call, pick_backend
from manycore._api._options import MapWork
from manycore._core import public
from manycore._scheduler import MapRun
from manycore.backends import awaited_from

__all__ = ["aimap", "amap"]

T = TypeVar("T")
_AHEAD = 256  # results aimap's thread may hold unread before it waits (or one chunk)
_STOP_WAIT = 5.0  # seconds a cancelled call waits for its map to wind down


@public
async def amap(
    fn: Callable[..., object],
    *iterables: Iterable[object],
    workers: int | None = None,
    backend: str | None = None,
    concurrency: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    start_method: str | None = None,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    on_error: str = "raise",
) -> list[Any]:
    """``mc.map`` for a coroutine: ``await mc.amap(fn, items)`` (an ``async def``
    ``fn`` runs on ``backend="asyncio"`` unless another backend is named).

    Takes the options of :func:`manycore.map` and works with every backend; the
    caller's event loop runs on while the map does. Cancelling the awaiting task
    stops the map (see the module's text for what that means per backend).
    """
    make = _planner(fn, iterables, "amap", locals())
    relay = _Relay(make, asyncio.get_running_loop(), ahead=None)
    try:
        values = await relay.next_chunk()
    except asyncio.CancelledError:
        await relay.stop_and_wait()
        raise
    return [] if values is None else values


@public
def aimap(
    fn: Callable[..., object],
    *iterables: Iterable[object],
    workers: int | None = None,
    backend: str | None = None,
    concurrency: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    start_method: str | None = None,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    on_error: str = "raise",
) -> AsyncIterator[Any]:
    """``mc.imap`` for a coroutine: ``async for y in mc.aimap(fn, items, ...)``.

    Results come as they are ready (in input order unless ``ordered=False``); the
    input is read only as far ahead as the consumer has got. Leaving the loop
    early (``break``, an error, a cancelled task) stops the map once the iterator
    is dropped, or at once with ``await results.aclose()``. Several tasks may pull
    from one iterator: each result goes to one of them.
    """
    return _Results(_planner(fn, iterables, "aimap", locals()))


_Make = Callable[[], tuple[MapRun, Callable[[], None]]]


def _planner(
    fn: Callable[..., object],
    iterables: tuple[Iterable[object], ...],
    name: str,
    args: dict[str, Any],
) -> _Make:
    """Check what is cheap to check now; the function that builds the run (in the
    relay's thread: it may start the pool's processes), and the function to call
    once the run is over (the default pool is kept open for it until then)."""
    v.check_callable(fn, "fn")
    v.check_iterables(iterables, name)
    backend = pick_backend(fn, args["backend"])
    v.check_backend(backend)
    v.check_workers(args["workers"], args["concurrency"], backend)
    v.check_start_method(args["start_method"], backend)
    options = check_call(fn, backend, args).options  # before the pool starts: no worker for nothing

    def make() -> tuple[MapRun, Callable[[], None]]:
        lease = lease_for_call(backend, args)
        try:
            run = lease.pool.start_map(MapWork(fn, iterables, False, name), options)
            return run, lease.release
        except BaseException:
            lease.release()
            raise

    return make


class _Relay:
    """A blocking map in a thread of its own, its results handed to an event loop.

    With ``ahead=None`` the thread collects every result and hands over one list
    at the end; else it hands over each chunk as the map yields it, and waits
    while ``ahead`` results are unread (the map reads lazy input no further).
    Chunks handed over while the loop has not yet picked up the last ones go in
    the same wake-up: one per chunk would cost a round trip per result.

    The thread runs in a copy of the caller's context: a map called from inside
    a task of an asyncio pool is then known to that pool as the task's own work.
    An asyncio pool runs the map's coroutines on the caller's loop (see
    ``backends._caller_loop``).
    """

    def __init__(self, make: _Make, loop: asyncio.AbstractEventLoop, ahead: int | None):
        self._make = make
        self._loop = loop
        self._ahead = ahead
        self._cond = threading.Condition()  # guards the next five
        self._run: MapRun | None = None
        self._stopped = False
        self._unread = 0  # results handed over and not yet read
        self._buffer: list[list[object]] = []  # chunks the loop has yet to pick up
        self._posted = False  # a _pick_up() is on its way to the loop
        # On the loop only:
        self._chunks: deque[list[object]] = deque()
        self._error: BaseException | None = None
        self._ended = False
        self._waiters: list[asyncio.Future[None]] = []  # one per task awaiting next_chunk()
        self._finished: asyncio.Future[None] = loop.create_future()
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(self._serve,), name="manycore-amap", daemon=True
        ).start()

    # ------------------------------------------------------------ thread side

    def _serve(self) -> None:
        # An asyncio pool runs the map's coroutines on the loop that awaits it.
        with awaited_from(self._loop):
            self._work()

    def _work(self) -> None:
        collected: list[object] = []
        error: BaseException | None = None
        chunks: Generator[list[object], None, None] | None = None
        release: Callable[[], None] | None = None
        try:
            run, release = self._make()
            with self._cond:
                self._run = run
                stopped = self._stopped
            if not stopped:
                chunks = cast("Generator[list[object], None, None]", iter(run))
                for values in chunks:
                    if self._ahead is None:
                        collected.extend(values)
                    elif not self._hand_over(values, self._ahead):
                        break
        except BaseException as exc:  # the map's own error: the awaiting side raises it
            error = exc
        finally:
            try:
                if chunks is not None:
                    chunks.close()  # a consumer that left early: the rest is cancelled
            finally:
                if release is not None:
                    release()  # an evicted default pool may close now
        self._post(self._end, collected, error)

    def _hand_over(self, values: list[object], ahead: int) -> bool:
        """Give one chunk to the loop, then wait for room; False: stop reading."""
        with self._cond:
            self._buffer.append(values)
            self._unread += len(values)
            post = not self._posted
            self._posted = True
        if post and not self._post(self._pick_up):
            return False
        with self._cond:
            while self._unread >= ahead and not self._stopped:
                self._cond.wait()  # woken by next_chunk() and by stop()
            return not self._stopped

    def _post(self, fn: Callable[..., None], *args: object) -> bool:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            return False  # the caller's loop has closed: nobody is left to read
        return True

    # -------------------------------------------------------------- loop side

    def _pick_up(self) -> None:
        with self._cond:
            self._chunks.extend(self._buffer)
            self._buffer.clear()
            self._posted = False
        self._wake()

    def _end(self, collected: list[object], error: BaseException | None) -> None:
        self._pick_up()
        if self._ahead is None and error is None:
            self._chunks.append(collected)
        self._error = error
        self._ended = True
        self._wake()
        self._finished.set_result(None)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def next_chunk(self) -> list[object] | None:
        """The next chunk of results; None at the end; the map's error, if it raised."""
        while not self._chunks:
            if self._ended:
                error, self._error = self._error, None
                if error is not None:
                    raise error
                return None
            # Every task waiting here is woken (several may share one aimap).
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        values = self._chunks.popleft()
        with self._cond:
            self._unread -= len(values)
            self._cond.notify()
        return values

    def stop(self) -> None:
        """From any thread: stop the map (its consumer was cancelled or left)."""
        with self._cond:
            self._stopped = True
            run = self._run
            self._cond.notify()
        if run is not None and not self._finished.done():
            run.stop()

    async def stop_and_wait(self) -> None:
        """Stop the map, and give it a bounded time to cancel what runs for it."""
        self.stop()
        await asyncio.wait([self._finished], timeout=_STOP_WAIT)


class _Results(AsyncIterator[Any]):
    """What ``aimap`` returns: results one by one, a relay started on first use."""

    def __init__(self, make: _Make):
        self._make = make
        self._relay: _Relay | None = None
        self._values: deque[object] = deque()

    def __aiter__(self) -> _Results:
        return self

    async def __anext__(self) -> Any:
        while not self._values:
            relay = self._relay
            if relay is None:
                relay = self._relay = _Relay(self._make, asyncio.get_running_loop(), _AHEAD)
                # An iterator dropped before its end (a break) stops its map.
                weakref.finalize(self, relay.stop)
            try:
                values = await relay.next_chunk()
            except asyncio.CancelledError:
                await relay.stop_and_wait()
                raise
            if values is None:
                raise StopAsyncIteration
            self._values.extend(values)
        return self._values.popleft()

    async def aclose(self) -> None:
        """Stop the map now (what has not started is dropped)."""
        if self._relay is not None:
            await self._relay.stop_and_wait()
