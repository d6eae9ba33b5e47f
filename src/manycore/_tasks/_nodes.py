"""Task futures: how one ``@mc.task`` call moves from its inputs to its result.

::

    load("a.csv") ─► TaskFuture WAITING ─ last input done ─► READY ─► dispatcher
                                                                         │
       inputs failed or cancelled: FAILED (UpstreamFailed) / CANCELLED ◄─┤
                                                     pool.submit(...) ◄──┘ SUBMITTED
                         pool future done ─► DONE / FAILED ─► dependents' callbacks

* Every move is made under the future's lock, along :data:`_MOVES`; an illegal
  one raises. Settling a future runs its dependents' callbacks, which only
  count down and queue (:mod:`manycore._tasks._run`): a failure or a cancel
  travels down a chain of any length without recursion.
* Nested calls. Inside a process worker there is no pool to reach: a task
  called there runs at once, in that worker. On the threads and serial
  backends a nested call goes to the pool of its caller; a task that then
  waits for tasks of its own pool that no worker has started runs them itself
  (:func:`help_along`), so a pool whose workers all wait cannot deadlock.
"""

from __future__ import annotations

import enum
import functools
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as _wait
from typing import TYPE_CHECKING, Any, TypeVar

from manycore._core import AwaitableFuture, UpstreamFailed, public
from manycore._scheduler import CallOptions, Retries
from manycore._tasks._run import current_pool, dispatch, futures_in, on_pool, resolve, to_lane
from manycore.backends import is_async_callable

if TYPE_CHECKING:
    from manycore._api import Pool
    from manycore._core import Batch
    from manycore._tasks._define import Task

__all__ = ["TaskFuture", "TaskNode", "TaskState", "help_along", "next_key", "run_here"]

R = TypeVar("R")

_keys = itertools.count(1)


def next_key() -> int:
    """A number for a new task call (its place in the graph)."""
    return next(_keys)


class TaskState(enum.Enum):
    WAITING = "waiting"  # for its input futures
    READY = "ready"  # queued for the dispatcher
    SUBMITTED = "submitted"  # on its pool (queued there, or running)
    RUNNING = "running"  # run in place by a task waiting for it
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


_S = TaskState
_MOVES = {
    _S.WAITING: {_S.READY, _S.FAILED, _S.CANCELLED},
    _S.READY: {_S.SUBMITTED, _S.RUNNING, _S.FAILED, _S.CANCELLED},
    _S.SUBMITTED: {_S.RUNNING, _S.DONE, _S.FAILED, _S.CANCELLED},
    _S.RUNNING: {_S.SUBMITTED, _S.DONE, _S.FAILED},
    _S.DONE: set(),
    _S.FAILED: set(),
    _S.CANCELLED: set(),
}


class TaskNode:
    """One call in the graph: what :func:`manycore.graph` draws. It holds no
    arguments or results, so a graph can be kept without keeping their memory."""

    __slots__ = ("deps", "error", "key", "name", "probe", "state")

    def __init__(self, key: int, name: str, deps: list[TaskNode]):
        self.key = key
        self.name = name
        self.deps = deps
        self.state = TaskState.WAITING
        self.error: str | None = None
        self.probe: Callable[[], bool] | None = None  # "running now?" while on a pool

    def move(self, new: TaskState) -> None:
        if new not in _MOVES[self.state]:
            raise RuntimeError(f"task {self.label}: illegal move {self.state.name} -> {new.name}")
        self.state = new

    @property
    def label(self) -> str:
        return f"{self.name!r} (#{self.key})"

    def __repr__(self) -> str:
        return f"<TaskNode #{self.key} {self.name} {self.state.value}>"


@public
class TaskFuture(AwaitableFuture[R]):
    """The future of one task call: a ``concurrent.futures.Future`` (and
    awaitable). ``node`` is its place in the graph (:func:`manycore.graph`)."""

    def __init__(self, task: Task[Any, R], node: TaskNode):
        super().__init__()
        self.task = task
        self.node = node
        self._lock = threading.Lock()
        self._call: tuple[tuple[object, ...], dict[str, object]] | None = None
        self._inputs: list[Future[Any]] = []
        self._waiting = 0
        self._pool: Pool | None = None  # None: the task's default pool, looked up when sent
        self._pool_future: Future[Any] | None = None
        self._sent = threading.Event()  # set once _pool_future is (or will never be) set
        self._sent_call: tuple[tuple[object, ...], dict[str, object]] | None = None  # to take back
        self._cancelling = False  # cancel() asked while SUBMITTED: no taking back
        self._dependents: list[TaskFuture[Any]] = []  # for cancel(): until settled
        # The last batch sent for it (its result's place on a cluster).
        self._batch: Batch | None = None
        self._lease: Any = None  # holds a default pool open until this call settles

    def __repr__(self) -> str:
        return f"<TaskFuture {self.node.name} #{self.node.key} {self.node.state.value}>"

    def _now(self) -> TaskState:
        # (A call, not the attribute: other threads move it between two reads.)
        return self.node.state

    def _claim(self, old: TaskState, new: TaskState) -> bool:
        with self._lock:
            if self.node.state is not old:
                return False
            self.node.move(new)
            return True

    # ------------------------------------------------------------ scheduling

    def _start(
        self,
        pool: Pool | None,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        inputs: list[Future[Any]],
    ) -> None:
        self._pool = pool
        self._call = (args, kwargs)
        self._inputs = inputs
        # One count more than there are inputs, released below: an input done
        # already calls back at once, and must not find the count at zero early.
        self._waiting = len(inputs) + 1
        for f in inputs:
            if isinstance(f, TaskFuture):
                with f._lock:  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
                    f._dependents.append(self)  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
            f.add_done_callback(self._input_done)
        self._input_done(None)

    def _input_done(self, _: Future[Any] | None) -> None:
        """Done-callback of each input: the last one queues the task. Never more
        here: this runs in the thread that settled the input."""
        with self._lock:
            self._waiting -= 1
            if self._waiting or self._now() is not TaskState.WAITING:
                return
            self.node.move(TaskState.READY)
        dispatch(self)

    def _dispatch(self) -> None:
        """On the dispatcher thread: settle a task whose input failed, else send it."""
        if self._settle_bad_inputs():
            return
        if self._pool is None:
            try:
                self._lease = self.task._default_pool()  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
                self._pool = self._lease.pool
            except BaseException as exc:
                if self._claim(TaskState.READY, TaskState.FAILED):
                    self._finish(None, exc)
                return
        if not self._pool.scheduler.backend.concurrent:
            to_lane(self._pool, self)  # it would run inside submit(): not on this thread
        else:
            self._send()

    def _settle_bad_inputs(self) -> bool:
        """True if an input failed or was cancelled (this task is then settled so)."""
        for f in self._inputs:
            if f.cancelled():
                if self._claim(TaskState.READY, TaskState.CANCELLED):
                    self._cancelled()
                return True
            error = f.exception()
            if error is not None:
                if self._claim(TaskState.READY, TaskState.FAILED):
                    self._finish(None, self._upstream_error(f, error))
                return True
        return False

    def _upstream_error(self, source: Future[Any], error: BaseException) -> UpstreamFailed:
        what = source.node.label if isinstance(source, TaskFuture) else "a future it was given"
        first = (error.first or error) if isinstance(error, UpstreamFailed) else error
        message = f"task {self.node.label} was not run: its input {what} failed"
        message += (
            f" (first error: {_short(first)})" if first is not error else f": {_short(error)}"
        )
        exc = UpstreamFailed(
            message,
            task=source.node.name if isinstance(source, TaskFuture) else None,
            key=source.node.key if isinstance(source, TaskFuture) else None,
        )
        exc.first = first
        exc.__cause__ = error
        return exc

    def _send(self) -> None:
        """Send a READY task to its pool."""
        with self._lock:
            if self.node.state is not TaskState.READY:
                self._sent.set()
                return  # cancelled, or run in place by a task waiting for it
            self.node.move(TaskState.SUBMITTED)
            call, self._call = self._call, None
        assert call is not None and self._pool is not None  # set by _dispatch
        pool, t = self._pool, self.task
        try:
            on_cluster = self._results_on_cluster(pool)
            args, kwargs = resolve(call[0], on_cluster), resolve(call[1], on_cluster)
            if is_async_callable(t.fn):  # for backend="asyncio" (others refuse it)
                fn, blob = t._acall, None  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
            elif pool.scheduler.backend.needs_pickling:
                fn, blob = t._call, t._pickled_call()  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
            else:  # in-process: the tasks it calls go to this same pool
                fn, blob = functools.partial(on_pool, pool, t._call), None  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
            pool.scheduler.backend.check_fn(fn)
            policy = pool.call_options(timeout=t.timeout, retries=t.retries, retry_on=t.retry_on)
            pool_future = pool.scheduler.submit(fn, args, kwargs, policy, blob, self._note_batch)
        except BaseException as exc:
            with self._lock:
                self.node.move(TaskState.FAILED)
            self._sent.set()
            self._finish(None, exc)
            return
        self._inputs = []  # their results are in the call now: let them go
        self._sent_call = (args, kwargs)
        self.node.probe = pool_future.running
        self._pool_future = pool_future
        self._sent.set()
        pool_future.add_done_callback(self._pool_done)

    def _note_batch(self, batch: Batch) -> None:
        self._batch = batch

    def _results_on_cluster(self, pool: Pool) -> dict[int, object] | None:
        """Inputs computed on the same cluster pool: references to their results
        there, which the engine resolves on the worker (no upload from here)."""
        handle_of = pool.scheduler.backend.result_ref
        refs = {}
        for f in self._inputs:
            if isinstance(f, TaskFuture) and f._pool is pool and f._batch is not None:  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
                ref = handle_of(f._batch)  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
                if ref is not None:
                    refs[id(f)] = ref
        return refs

    def _pool_done(self, pool_future: Future[Any]) -> None:
        cancelled = pool_future.cancelled()
        error = None if cancelled else pool_future.exception()
        with self._lock:
            if self.node.state is not TaskState.SUBMITTED:
                return  # taken back, and run in place
            if cancelled:
                self.node.move(TaskState.CANCELLED)
            else:
                self.node.move(TaskState.FAILED if error is not None else TaskState.DONE)
        if cancelled:
            self._cancelled()
        else:
            self._finish(None if error is not None else pool_future.result(), error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        self._forget()
        if error is not None:
            self.node.error = _short(error)
            self.set_exception(error)
        else:
            self.set_result(value)

    def _cancelled(self) -> None:
        self._forget()
        if super().cancel():
            self.set_running_or_notify_cancel()  # wakes wait() and as_completed()

    def _forget(self) -> None:
        """Drop what a settled task no longer needs (its inputs' results)."""
        self._call = self._sent_call = None
        self._inputs = []
        self.node.probe = None
        with self._lock:
            self._dependents = []
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    # ------------------------------------------------------- the user's side

    def cancel(self) -> bool:
        """Cancel this task if it has not started, and everything downstream of it."""
        with self._lock:
            state = self.node.state
            if state in (TaskState.WAITING, TaskState.READY):
                self.node.move(TaskState.CANCELLED)
            elif state is TaskState.SUBMITTED:
                self._cancelling = True
        if state in (TaskState.WAITING, TaskState.READY):
            # Everything downstream is listed before anything settles: settling
            # wakes the dispatcher, which may cancel some of them meanwhile and
            # drop their lists of dependents.
            # Two phases: every one is marked CANCELLED before any is settled, so
            # that settling wakes no dependent into the dispatcher's hands.
            downstream = _mark_cancelled(_downstream_of(self))
            self._sent.set()
            self._cancelled()
            for f in downstream:
                f._sent.set()  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
                f._cancelled()  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
            return True
        if state is TaskState.SUBMITTED:
            self._sent.wait()
            pool_future = self._pool_future
            if pool_future is not None:
                pool_future.cancel()  # if it had not started: _pool_done cancels this
        return self.cancelled()

    def running(self) -> bool:
        state = self.node.state
        pool_future = self._pool_future
        return state is TaskState.RUNNING or (
            state is TaskState.SUBMITTED and pool_future is not None and pool_future.running()
        )

    def result(self, timeout: float | None = None) -> R:
        return super().result(self._help_first(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return super().exception(self._help_first(timeout))

    def _help_first(self, timeout: float | None) -> float | None:
        """Inside a task on an in-process pool: help (see :func:`help_along`);
        the time left of ``timeout``."""
        if self.done() or current_pool() is None:
            return timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        help_along([self], deadline)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    # ------------------------------------------------------------- in place

    def _run_here_if_free(self, pool: Pool, deadline: float | None) -> None:
        """Run this task in the calling thread if it is on ``pool`` and no
        worker has started it; its inputs must be settled."""
        if self._pool is not pool:
            return
        while True:
            state = self._now()
            if state is TaskState.WAITING:  # inputs done; their callbacks still running
                if deadline is not None and time.monotonic() >= deadline:
                    return
                time.sleep(0.0005)
                continue
            if state is TaskState.SUBMITTED:
                self._take_back()
                return
            if state is not TaskState.READY or self._settle_bad_inputs():
                return  # running elsewhere, or settled
            with self._lock:
                if self.node.state is not TaskState.READY:
                    continue  # the dispatcher sent it meanwhile: look again
                self.node.move(TaskState.RUNNING)
                call, self._call = self._call, None
            assert call is not None
            self._run_in_place(resolve(call[0]), resolve(call[1]))
            return

    def _take_back(self) -> None:
        """A SUBMITTED task that no worker has started: cancel it on the pool and
        run it here."""
        self._sent.wait()
        pool_future, call = self._pool_future, self._sent_call
        if pool_future is None or call is None:
            return
        with self._lock:
            if self.node.state is not TaskState.SUBMITTED or self._cancelling:
                return
            self.node.move(TaskState.RUNNING)  # so _pool_done leaves it to us
        if pool_future.cancel():
            self._run_in_place(*call)
            return
        with self._lock:
            self.node.move(TaskState.SUBMITTED)
        if pool_future.done():  # it finished while we held it: report it now
            self._pool_done(pool_future)

    def _run_in_place(self, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        try:
            value, error = _call_with_retries(self.task, args, kwargs)
        except BaseException as exc:  # Ctrl-C: settle (nobody waits forever), then go on
            with self._lock:
                self.node.move(TaskState.FAILED)
            self._finish(None, exc)
            raise
        with self._lock:
            self.node.move(TaskState.FAILED if error is not None else TaskState.DONE)
        self._finish(value, error)


def _downstream_of(root: TaskFuture[Any]) -> list[TaskFuture[Any]]:
    """Every task that waits, directly or not, for ``root`` (a loop, not recursion)."""
    found: dict[int, TaskFuture[Any]] = {}
    with root._lock:  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
        stack = list(root._dependents)  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
    while stack:
        f = stack.pop()
        if f.node.key in found:
            continue
        found[f.node.key] = f
        with f._lock:  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
            stack.extend(f._dependents)  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
    return [found[k] for k in sorted(found)]


def _mark_cancelled(futures: list[TaskFuture[Any]]) -> list[TaskFuture[Any]]:
    """Move those of ``futures`` that have not started to CANCELLED; them."""
    marked = []
    for f in futures:
        with f._lock:  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
            if f.node.state in (TaskState.WAITING, TaskState.READY):
                f.node.move(TaskState.CANCELLED)
                marked.append(f)
    return marked


def help_along(futures: list[Future[Any]], deadline: float | None, first: bool = False) -> None:
    """Called by a task on an in-process pool that is about to wait for
    ``futures``: run those tasks of its own pool that no worker has started, in
    this thread, inputs first (as the pool's workers may all be waiting, nobody
    else would). Stops at ``deadline``, or once one future is done if ``first``."""
    pool = current_pool()
    if pool is None:
        return
    wanted = [f for f in futures if isinstance(f, TaskFuture) and not f.done()]
    upstream: dict[int, TaskFuture[Any]] = {}
    stack = list(wanted)
    while stack:  # not recursion: a chain may be thousands long
        f = stack.pop()
        if f.node.key in upstream or f.done():
            continue
        upstream[f.node.key] = f
        stack.extend(i for i in f._inputs if isinstance(i, TaskFuture))  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
    for key in sorted(upstream):  # inputs were made before what uses them
        f = upstream[key]
        if deadline is not None and time.monotonic() >= deadline:
            return
        if first and any(w.done() for w in wanted):
            return
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        _, pending = _wait([i for i in f._inputs if not i.done()], left)  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
        if pending:
            return  # the deadline passed
        f._run_here_if_free(pool, deadline)  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:297] + "..."


def _call_with_retries(
    task: Task[Any, Any], args: tuple[object, ...], kwargs: dict[str, object]
) -> tuple[Any, BaseException | None]:
    """Run a task in this thread, retried as the task says, each retry after its
    backoff (its timeout cannot be enforced here)."""
    options = CallOptions(retries=task.retries or 0, retry_on=task.retry_on or (Exception,))
    retries: Retries[None, None] = Retries()
    while True:
        try:
            return task.fn(*args, **kwargs), None
        except Exception as exc:
            if not retries.book(None, exc, options, None):
                return None, exc
            time.sleep(retries.wait() or 0.0)
            retries.due()


def run_here(
    task: Task[Any, R], args: tuple[object, ...], kwargs: dict[str, object]
) -> TaskFuture[R]:
    """A task called inside a process worker runs at once, in that worker."""
    inputs = futures_in((args, kwargs))
    deps = [f.node for f in inputs if isinstance(f, TaskFuture)]
    future: TaskFuture[R] = TaskFuture(task, TaskNode(next_key(), task.name, deps))
    future._inputs = inputs  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
    _wait(inputs)
    future.node.move(TaskState.READY)
    if not future._settle_bad_inputs():  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
        future.node.move(TaskState.RUNNING)
        future._run_in_place(resolve(args), resolve(kwargs))  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
    return future
