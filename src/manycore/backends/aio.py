"""``backend="asyncio"``: ``async def`` functions on an event loop of the pool's own.

For I/O-bound work where many calls wait at once: one thread runs one event loop,
and up to ``concurrency`` coroutines (the pool's ``workers``) run on it side by
side, items of one batch too. The caller may be synchronous code, any thread, or
a coroutine on another loop (``mc.amap``). Unlike a thread, a coroutine can be
stopped: an item past its ``timeout`` is cancelled (at its next ``await``) and
fails with TaskTimeout, and ``kill`` cancels a running batch; either way its slot
is freed at once, so a coroutine that ignores the cancel stalls nothing. One that
blocks without awaiting holds up the whole loop. ``init`` (which may be ``async
def``) runs once, on the loop: its result is ``mc.worker_state()`` in every task.
"""

from __future__ import annotations

import inspect
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _state
from .._batch import Batch, BatchResult, _from_user_code
from .._errors import PoolBroken, PoolClosed, TaskTimeout
from ._base import Backend, BackendOptions, Done, is_async_callable, register_backend

if TYPE_CHECKING:
    import asyncio  # imported where the loop starts: a pool that never uses it pays nothing

__all__ = ["DEFAULT_CONCURRENCY", "AsyncioBackend"]

DEFAULT_CONCURRENCY = 100  # coroutines at once when neither workers nor concurrency is given
_GRACE = 1.0  # seconds cancelled coroutines get to finish before the loop closes
_CATCH = (Exception, SystemExit, KeyboardInterrupt)


@dataclass(eq=False)
class _Job:
    """A batch the loop runs: what its items gave so far (guarded by the lock)."""

    batch: Batch
    done: Done
    values: list[Any]
    left: int  # items without an outcome yet
    failures: dict[int, BaseException] | None = None
    begun: int = 0  # items started; the next to start is items[begun]
    claimed: bool = False  # claim() was called: the batch counts as started
    reported: bool = False  # done() was called, or will be by whoever set this
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)  # running, by offset
    started: float = 0.0

    def result(self) -> BatchResult:
        return BatchResult(self.values, self.failures, time.perf_counter() - self.started)


@register_backend
class AsyncioBackend(Backend):
    name = "asyncio"
    supports_kill = True  # a running coroutine is cancelled
    one_item_per_batch = True

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        self._lock = threading.Lock()
        self._jobs: dict[Batch, _Job] = {}  # not reported yet
        self._queue: deque[_Job] = deque()  # with items not started yet, in order
        self._free = options.workers  # slots for coroutines
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = False  # init has run: items may start
        self._pumping = False  # a _pump() is already on its way to the loop
        self._closing = False
        self._init_error: BaseException | None = None
        self._state: Any = None  # what init returned
        self._live: set[asyncio.Task[None]] = set()  # every item task not yet ended
        self._wakeup: asyncio.Event | None = None  # made on the loop; wakes _main

    def check_fn(self, fn: Callable[..., Any]) -> None:
        if not is_async_callable(fn):
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
            raise TypeError(
                f"fn must be an async function (async def) for backend='asyncio', got "
                f"{name}, a plain callable. Use backend='threads' for blocking functions, "
                "or call them from an async def with 'await asyncio.to_thread(f, x)'"
            )

    # ----------------------------------------------------------------- caller

    def submit(self, batch: Batch, done: Done) -> None:
        with self._lock:
            if self._init_error is not None:
                raise self._broken()
            if self._closing:
                raise PoolClosed("the pool has been shut down and accepts no new work")
            if not batch.submit and threading.current_thread() is self._thread:
                # A blocking map waits for results only this very loop can produce.
                raise RuntimeError(
                    "a blocking map inside a task of the asyncio backend would wait on its "
                    "own event loop forever; use 'await mc.amap(...)' or 'await pool.submit(...)'"
                )
            wake = False
            if len(batch):
                if self._loop is None:
                    self._start_locked()
                job = _Job(batch, done, [None] * len(batch), len(batch))
                self._jobs[batch] = job
                self._queue.append(job)
                wake = self._ready and self._free > 0 and not self._pumping
                self._pumping = self._pumping or wake
        if not len(batch):
            done(batch, BatchResult([], None, 0.0))  # no item would ever report it
        elif wake:
            self._call(self._pump)

    def cancel(self, batch: Batch) -> bool:
        with self._lock:
            job = self._jobs.get(batch)
            if job is None or job.claimed:
                return False
            self._drop_locked(job)
        job.done(batch, CancelledError())
        return True

    def kill(self, batch: Batch) -> bool:
        with self._lock:
            job = self._jobs.get(batch)
            if job is None:
                return False
            tasks = self._drop_locked(job)
        job.done(batch, CancelledError())
        self._call(self._cancel, tasks)
        return True

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        with self._lock:
            self._closing = True
            dropped = [j for j in self._queue if not j.claimed] if cancel_pending else []
            if dropped:  # in one pass: removing jobs one by one from a long queue is slow
                self._queue = deque(j for j in self._queue if j.claimed)
            for job in dropped:
                self._drop_locked(job)
            thread = self._thread
        for job in dropped:
            job.done(job.batch, CancelledError())
        if thread is None:
            return  # never started: no loop, no init, nothing to exit
        self._call(self._after, None)
        if wait and threading.current_thread() is not thread:
            # Waits for the work to drain; coroutines abandoned after a timeout or
            # a kill get a bounded grace (_GRACE) on the loop, not an open-ended one.
            thread.join()

    def terminate(self) -> None:
        with self._lock:
            self._closing = True
            jobs = list(self._jobs.values())
            self._queue.clear()
            tasks = [t for job in jobs for t in self._drop_locked(job)]
        for job in jobs:
            job.done(job.batch, CancelledError())
        self._call(self._cancel, tasks)

    def _drop_locked(self, job: _Job) -> list[asyncio.Task[None]]:
        """Take ``job`` off the books (its caller reports it); its running tasks,
        whose slots are free from now on, whatever the tasks do with the cancel."""
        job.reported = True
        self._jobs.pop(job.batch, None)
        if job.begun < len(job.batch) and job in self._queue:
            self._queue.remove(job)
        tasks = list(job.tasks.values())
        job.tasks.clear()
        self._free += len(tasks)
        return tasks

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop, from any thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop has closed: nothing is left there to wake

    def _broken(self) -> PoolBroken:
        err = PoolBroken(f"the init function raised {self._init_error!r}; the pool is broken")
        err.__cause__ = self._init_error
        return err

    # ------------------------------------------------------------------- loop

    def _start_locked(self) -> None:
        import asyncio

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(self._loop,), name="manycore-asyncio", daemon=True
        )
        self._thread.start()

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        import asyncio

        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
            # Async generators left open by tasks get to run their finally blocks.
            closing = loop.create_task(loop.shutdown_asyncgens())
            loop.run_until_complete(asyncio.wait([closing], timeout=_GRACE))
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # also shuts the default executor down, without waiting

    async def _main(self) -> None:
        import asyncio

        self._wakeup = asyncio.Event()
        if not await self._initialise():
            return
        _state.set_thread(self._state, self.options.shared)
        with self._lock:
            self._ready = True
        self._pump()
        while True:
            with self._lock:
                if self._closing and not self._jobs:
                    break
            await self._wakeup.wait()
            self._wakeup.clear()
        # Left: coroutines abandoned after a timeout or a kill that ignored the cancel.
        leftovers = [t for t in self._live if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=_GRACE)
        await _run_exit(self.options.exit)

    async def _initialise(self) -> bool:
        init = self.options.init
        if init is None:
            return True
        try:
            state = init(*self.options.init_args)
            if inspect.isawaitable(state):
                state = await state
        except BaseException as exc:
            with self._lock:
                self._init_error = exc
                jobs = list(self._jobs.values())
                self._queue.clear()
                for job in jobs:
                    self._drop_locked(job)
            err = self._broken()
            for job in jobs:
                job.done(job.batch, err)
            return False
        self._state = state
        return True

    def _pump(self) -> None:
        """Start waiting items while slots are free (on the loop)."""
        while True:
            with self._lock:
                self._pumping = False
                if not self._ready or self._free <= 0 or not self._queue:
                    return
                job = self._queue[0]
                if not job.claimed:
                    job.claimed = True  # cancel() leaves it alone from here on
                    claim = job.batch.claim
                else:
                    claim = None
                    self._start_locked_items(job)
            if claim is None:
                continue
            try:
                wanted, error = claim(), None
            except Exception as exc:  # reported, not raised: the loop must go on
                wanted, error = False, exc
            if not wanted:
                with self._lock:  # a submit() future cancelled meanwhile: drop it
                    dropped = not job.reported
                    if dropped:
                        self._drop_locked(job)
                if dropped and error is not None:
                    job.done(job.batch, error)

    def _start_locked_items(self, job: _Job) -> None:
        if job.begun == 0:
            job.started = time.perf_counter()
        assert self._loop is not None
        while self._free > 0 and job.begun < len(job.batch):
            offset = job.begun
            job.begun += 1
            self._free -= 1
            task = self._loop.create_task(self._run_item(job, offset))
            job.tasks[offset] = task
            self._live.add(task)
            task.add_done_callback(self._live.discard)
        if job.begun == len(job.batch):
            self._queue.popleft()

    async def _run_item(self, job: _Job, offset: int) -> None:
        import asyncio

        batch = job.batch
        timer = None
        if batch.timeout is not None:
            assert self._loop is not None
            timer = self._loop.call_later(batch.timeout, self._expire, job, offset)
        error: BaseException | None = None
        value = None
        try:
            value = await _call(batch, offset)
        except asyncio.CancelledError as exc:
            # A timeout or a kill settled the item already; else the coroutine
            # itself raised it, and that is its outcome.
            error = exc
        except _CATCH as exc:
            error = _from_user_code(exc)
        finally:
            if timer is not None:
                timer.cancel()
        self._settle(job, offset, value, error)

    def _settle(self, job: _Job, offset: int, value: Any, error: BaseException | None) -> None:
        with self._lock:
            if job.tasks.pop(offset, None) is None:
                return  # settled by a timeout, or dropped by a kill: the slot is free
            self._free += 1
            job.values[offset] = value
            if error is not None:
                job.failures = job.failures or {}
                job.failures[offset] = error
            report = self._count_locked(job)
        self._after(job if report else None)

    def _expire(self, job: _Job, offset: int) -> None:
        """An item overstayed its timeout: it fails now, and its task is cancelled."""
        with self._lock:
            task = job.tasks.pop(offset, None)
            if task is None:
                return
            self._free += 1
            timeout = job.batch.timeout
            assert timeout is not None
            job.failures = job.failures or {}
            job.failures[offset] = TaskTimeout(
                f"{job.batch.name_item(offset)} ran longer than timeout={timeout:g} s; "
                "its coroutine was cancelled",
                timeout=timeout,
                index=job.batch.start + offset,
            )
            report = self._count_locked(job)
        task.cancel()
        self._after(job if report else None)

    def _count_locked(self, job: _Job) -> bool:
        """One more item of ``job`` has its outcome: True if the job is to be reported."""
        job.left -= 1
        if job.left or job.reported:
            return False
        job.reported = True
        del self._jobs[job.batch]
        return True

    def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        self._after(None)  # their slots were freed

    def _after(self, finished: _Job | None) -> None:
        """On the loop, after slots were freed: report ``finished``, start waiting
        items, and wake ``_main`` when a closing pool has nothing left to run."""
        if finished is not None:
            finished.done(finished.batch, finished.result())
        self._pump()
        with self._lock:
            idle = self._closing and not self._jobs
        if idle and self._wakeup is not None:
            self._wakeup.set()


def _call(batch: Batch, offset: int) -> Awaitable[Any]:
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


async def _run_exit(exit_fn: Callable[[], Any] | None) -> None:
    if exit_fn is None:
        return
    try:
        out = exit_fn()
        if inspect.isawaitable(out):
            await out
    except Exception:
        traceback.print_exc()  # the loop is ending anyway: say it, do not raise
