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

Work a task gives to its own pool (``await mc.amap(...)``, ``await pool.submit(...)``)
would wait forever once the waiting tasks hold every slot: such nested work goes
first in line, and the task that waits for it lends it its own slot meanwhile.

Work awaited from another running loop (``await pool.submit(...)``, ``await
mc.amap(...)``) runs on that loop, so what it made there works: see ``_caller_loop``.
"""

from __future__ import annotations

import inspect
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future
from typing import TYPE_CHECKING

from manycore._core import (
    Batch,
    BatchResult,
    Deadlines,
    PoolBroken,
    from_user_code,
    pool_closed,
    task_state,
    timed_out,
)
from manycore.backends._aio_jobs import ITEM, Item, Job
from manycore.backends._base import (
    Backend,
    BackendOptions,
    Done,
    is_async_callable,
    register_backend,
)
from manycore.backends._caller_loop import (
    LoopFuture,
    awaiting_loop,
    call,
    call_at,
    from_the_call,
    running_loop,
)

if TYPE_CHECKING:
    import asyncio  # imported where the loop starts: a pool that never uses it pays nothing

__all__ = ["DEFAULT_CONCURRENCY", "AsyncioBackend"]

DEFAULT_CONCURRENCY = 100  # coroutines at once when neither workers nor concurrency is given
_GRACE = 1.0  # seconds cancelled coroutines get to finish before the loop closes
_LOOK_AGAIN = 1.0  # seconds between looks, in shutdown(), at the callers' loops


@register_backend
class AsyncioBackend(Backend):
    name = "asyncio"
    supports_kill = True  # a running coroutine is cancelled
    one_item_per_batch = True
    numbered_workers = False  # coroutines share one loop: stats list it as "loop"
    accepts = frozenset({"concurrency"})

    @classmethod
    def check_options(cls, workers: int | None, given: Mapping[str, object]) -> int | None:
        limit = given.get("concurrency")
        assert limit is None or isinstance(limit, int)  # checked by the caller
        if limit is not None and workers not in (None, limit):
            raise ValueError(
                f"workers={workers} and concurrency={limit} disagree: for "
                "backend='asyncio' both are the number of coroutines running at once; give one"
            )
        return workers if limit is None else limit

    @classmethod
    def misplaced(cls, name: str, value: object, backend: str) -> str:
        return (
            f"{name}={value!r:.80} applies only to backend='asyncio' (coroutines "
            f"running at once); for backend={backend!r} give workers="
        )

    @classmethod
    def default_workers(cls) -> int:
        return DEFAULT_CONCURRENCY

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # a job left _jobs
        self._jobs: dict[Batch, Job] = {}  # not reported yet
        self._queue: deque[Job] = deque()  # with items not started yet, in order
        self._nested: deque[Job] = deque()  # the same, submitted by this pool's items: first
        self._free = options.workers  # slots for coroutines
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = False  # init has run: items may start
        self._pumping = False  # a _pump() is already on its way to the loop
        self._closing = False
        self._failure: PoolBroken | None = None  # init raised, or the loop died
        self._state: object = None  # what init returned
        self._live: set[asyncio.Task[None]] = set()  # every item task not yet ended
        self._wakeup: asyncio.Event | None = None  # made on the loop; wakes _main
        # Items' deadlines (in loop.time()), touched on the loop only; one loop
        # timer, set for the earliest, serves them all.
        self._deadlines: Deadlines[tuple[Job, int]] = Deadlines()
        self._alarm: asyncio.TimerHandle | None = None

    @classmethod
    def check_fn(cls, fn: Callable[..., object]) -> None:
        if not is_async_callable(fn):
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
            raise TypeError(
                f"fn must be an async function (async def) for backend='asyncio', got "
                f"{name}, a plain callable. Use backend='threads' for blocking functions, "
                "or call them from an async def with 'await asyncio.to_thread(f, x)'"
            )

    # ----------------------------------------------------------------- caller

    def origin(self) -> asyncio.AbstractEventLoop | None:
        """The loop a coroutine that submits now awaits from (an amap's, or the
        one running in this thread), unless it is the pool's own."""
        return self._home(awaiting_loop() or running_loop())

    def _home(self, loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop | None:
        """Where the items of work awaited from ``loop`` run: on ``loop``, so that
        what the caller made there works in them; None: on the pool's own loop.
        With an ``init`` the pool's loop it is: ``init`` made the tasks' state
        (a session, a connection) there, and it works only there."""
        if loop is self._loop or self.options.init is not None:
            return None
        return loop

    def new_future(self, origin: object = None) -> Future[object]:
        return LoopFuture(self, origin)

    def runs_here(self, batch: Batch) -> bool:
        return batch.origin is not None and batch.origin is running_loop()

    def submit(self, batch: Batch, done: Done) -> None:
        caller = ITEM.get()
        parent = caller
        while parent is not None and parent.owner is not self:
            parent = parent.outer
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._closing:
                raise pool_closed()
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
                # A blocking map from a coroutine blocks that coroutine's loop: its
                # items run on the pool's; an awaited map or submit(): on the caller's.
                home = batch.origin if batch.submit else self._home(awaiting_loop())
                job = Job(batch, done, [None] * len(batch), len(batch), caller)
                job.home = home
                self._jobs[batch] = job
                if parent is not None and not parent.ended:
                    # Work that an item of this pool waits for: it goes first, and
                    # the item's slot is free for it until all such work is done.
                    job.parent = parent
                    parent.nested += 1
                    if not parent.lent:
                        parent.lent = True
                        self._free += 1
                    self._nested.append(job)
                else:
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
            dropped: list[Job] = []
            for queue in (self._nested, self._queue) if cancel_pending else ():
                waiting = [j for j in queue if not j.claimed]
                if waiting:  # in one pass: removing jobs one by one from a long queue is slow
                    kept = [j for j in queue if j.claimed]
                    queue.clear()
                    queue.extend(kept)
                    dropped += waiting
            for job in dropped:
                self._drop_locked(job)
            thread = self._thread
        for job in dropped:
            job.done(job.batch, CancelledError())
        if thread is None:
            return  # never started: no loop, no init, nothing to exit
        self._call(self._after, None)
        if not wait or threading.current_thread() is thread:
            return
        here = running_loop()
        with self._lock:
            # Calls on this very loop cannot go on while it waits here, nor calls
            # on a caller's loop that is not running (stopped between two
            # run_until_complete()): wait for the rest; those go on when their
            # loop does (or fail when it closes). Looked at again now and then:
            # a loop may stop meanwhile.
            while any(_can_go_on(j.home, here) for j in self._jobs.values()):
                self._settled.wait(_LOOK_AGAIN)
            if self._jobs:
                return
        # Waits for the loop to end; coroutines abandoned after a timeout or a
        # kill get a bounded grace (_GRACE) on the loop, not an open-ended one.
        thread.join()

    def terminate(self) -> None:
        with self._lock:
            self._closing = True
            jobs = self._clear_locked()
            tasks = [t for job in jobs for t in self._drop_locked(job)]
        for job in jobs:
            job.done(job.batch, CancelledError())
        self._call(self._cancel, tasks)

    def _clear_locked(self) -> list[Job]:
        """Every job not reported yet; the queues emptied (the caller drops them)."""
        self._queue.clear()
        self._nested.clear()
        return list(self._jobs.values())

    def _drop_locked(self, job: Job) -> list[asyncio.Task[None]]:
        """Take ``job`` off the books (its caller reports it); its running tasks,
        whose slots are free from now on, whatever the tasks do with the cancel."""
        job.reported = True
        self._jobs.pop(job.batch, None)
        self._settled.notify_all()
        queue = self._queue if job.parent is None else self._nested
        if job.begun < len(job.batch) and job in queue:
            queue.remove(job)
        tasks = []
        for task, item in job.tasks.values():
            self._release_locked(item)
            tasks.append(task)
        job.tasks.clear()
        self._job_over_locked(job)
        return tasks

    def _release_locked(self, item: Item) -> None:
        """``item`` has its outcome: its slot is free (it already is while lent)."""
        item.ended = True
        if not item.lent:
            self._free += 1

    def _job_over_locked(self, job: Job) -> None:
        """``job`` is reported: the item waiting for it takes its slot back when
        none of its work is left."""
        parent, job.parent = job.parent, None
        if parent is None:
            return
        parent.nested -= 1
        if not parent.nested and parent.lent:
            parent.lent = False
            if not parent.ended:
                self._free -= 1

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        """Run ``fn(*args)`` on the loop, from any thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop has closed: nothing is left there to wake

    def _break(self, message: str, cause: BaseException) -> None:
        """The pool runs nothing more: fail what waits and what runs with PoolBroken."""
        err = PoolBroken(message)
        err.__cause__ = cause
        with self._lock:
            if self._failure is None:
                self._failure = err
            jobs = self._clear_locked()
            tasks = [t for job in jobs for t in self._drop_locked(job)]
        for job in jobs:
            job.done(job.batch, err)
        for task in tasks:
            task.cancel()

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
        except BaseException as exc:  # the loop was stopped under us (or a bug of ours)
            self._break(f"the pool's event loop ended unexpectedly ({exc!r})", exc)
            self._wind_down(loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # also shuts the default executor down, without waiting

    def _wind_down(self, loop: asyncio.AbstractEventLoop) -> None:
        """After the loop died: give the cancelled coroutines a bounded chance to
        run their finally blocks (the loop may be stopped again: then leave it)."""
        import asyncio

        live = [t for t in self._live if not t.done()]
        if not live:
            return
        try:
            loop.run_until_complete(asyncio.wait(live, timeout=_GRACE))
        except BaseException:
            pass

    async def _main(self) -> None:
        import asyncio

        self._wakeup = asyncio.Event()
        if not await self._initialise():
            return
        task_state.set_thread(self._state, self.options.shared)
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
            self._break(f"the init function raised {exc!r}; the pool is broken", exc)
            return False
        self._state = state
        return True

    def _pump(self) -> None:
        """Start waiting items while slots are free (on the loop)."""
        while True:
            with self._lock:
                self._pumping = False
                queue = self._nested or self._queue
                if not self._ready or self._free <= 0 or not queue:
                    return
                job = queue[0]
                if not job.claimed:
                    job.claimed = True  # cancel() leaves it alone from here on
                    claim = job.batch.claim
                else:
                    claim = None
                    self._start_locked_items(job, queue)
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

    def _start_locked_items(self, job: Job, queue: deque[Job]) -> None:
        if job.begun == 0:
            job.started = time.perf_counter()
        assert self._loop is not None
        while self._free > 0 and job.begun < len(job.batch):
            offset = job.begun
            job.begun += 1
            self._free -= 1
            item = Item(self, job.caller)
            task = self._loop.create_task(self._run_item(job, offset, item))
            job.tasks[offset] = (task, item)
            self._live.add(task)
            task.add_done_callback(self._live.discard)
        if job.begun == len(job.batch):
            queue.popleft()

    async def _run_item(self, job: Job, offset: int, item: Item) -> None:
        import asyncio

        ITEM.set(item)  # this task's own context: what it submits to this pool is nested
        batch = job.batch
        if batch.timeout is not None:
            self._arm((job, offset), batch.timeout)
        error: BaseException | None = None
        value = None
        try:
            if job.home is None:
                value = await call(batch, offset)
            else:
                value = await call_at(job.home, batch, offset, (self._state, self.options.shared))
        except (asyncio.CancelledError, CancelledError) as exc:
            # After a timeout or a kill the item is settled already, and this is
            # ignored. Else the coroutine ended so on its own (it awaited something
            # that was cancelled): an error of the item, not a cancelled map.
            error = RuntimeError(
                f"{batch.name_item(offset)} ended with {type(exc).__module__}."
                f"{type(exc).__name__}: something it awaited was cancelled (not by a "
                "timeout or a kill of this item)"
            )
            error.__cause__ = from_user_code(exc)
        except BaseException as exc:  # the item's outcome, whatever it is
            error = from_the_call(from_user_code(exc))
        finally:
            self._deadlines.disarm((job, offset))
        self._settle(job, offset, value, error)

    def _arm(self, key: tuple[Job, int], timeout: float) -> None:
        """(On the loop.) Item ``key`` fails ``timeout`` seconds from now."""
        loop = self._loop
        assert loop is not None
        if self._deadlines.arm(key, loop.time() + timeout):
            if self._alarm is not None:
                self._alarm.cancel()
            self._alarm = loop.call_later(timeout, self._on_alarm)

    def _on_alarm(self) -> None:
        """(On the loop.) Fail the items past their deadline; wait for the next."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        expired = self._deadlines.due(now)
        wait = self._deadlines.wait(now)
        self._alarm = None if wait is None else loop.call_later(wait, self._on_alarm)
        for job, offset in expired:
            self._expire(job, offset)

    def _settle(self, job: Job, offset: int, value: object, error: BaseException | None) -> None:
        with self._lock:
            entry = job.tasks.pop(offset, None)
            if entry is None:
                return  # settled by a timeout, or dropped by a kill: the slot is free
            self._release_locked(entry[1])
            job.values[offset] = value
            if error is not None:
                job.failures = job.failures or {}
                job.failures[offset] = error
            report = self._count_locked(job)
        self._after(job if report else None)

    def _expire(self, job: Job, offset: int) -> None:
        """An item overstayed its timeout: it fails now, and its task is cancelled."""
        with self._lock:
            entry = job.tasks.pop(offset, None)
            if entry is None:
                return
            task, item = entry
            self._release_locked(item)
            timeout = job.batch.timeout
            assert timeout is not None
            job.failures = job.failures or {}
            job.failures[offset] = timed_out(
                job.batch.name_item(offset),
                timeout,
                job.batch.start + offset,
                "its coroutine was cancelled",
            )
            report = self._count_locked(job)
        task.cancel()
        self._after(job if report else None)

    def _count_locked(self, job: Job) -> bool:
        """One more item of ``job`` has its outcome: True if the job is to be reported."""
        job.left -= 1
        if job.left or job.reported:
            return False
        job.reported = True
        del self._jobs[job.batch]
        self._settled.notify_all()
        self._job_over_locked(job)
        return True

    def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        self._after(None)  # their slots were freed

    def _after(self, finished: Job | None) -> None:
        """On the loop, after slots were freed: report ``finished``, start waiting
        items, and wake ``_main`` when a closing pool has nothing left to run."""
        if finished is not None:
            finished.done(finished.batch, finished.result())
        self._pump()
        with self._lock:
            idle = self._closing and not self._jobs
        if idle and self._wakeup is not None:
            self._wakeup.set()


def _can_go_on(
    home: asyncio.AbstractEventLoop | None, here: asyncio.AbstractEventLoop | None
) -> bool:
    """A call on ``home`` (None: the pool's loop) ends while ``here`` is blocked."""
    return home is None or (home is not here and (home.is_running() or home.is_closed()))


async def _run_exit(exit_fn: Callable[[], object] | None) -> None:
    if exit_fn is None:
        return
    try:
        out = exit_fn()
        if inspect.isawaitable(out):
            await out
    except BaseException:  # SystemExit, a cancel...: the loop ends anyway
        traceback.print_exc()  # say it, do not raise: the loop still has to close
