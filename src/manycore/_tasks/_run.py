"""The threads behind task graphs, and the helpers that read task arguments.

* The dispatcher: one thread per process sends READY tasks to their pools. The
  done-callbacks that make tasks READY run in whatever thread settled an input
  (often the process engine's I/O thread); they only queue, so that thread never
  pickles, and a long chain settles in a loop here, never by recursion.
* Lanes: a backend that runs a task inside ``submit`` (serial) would run it on
  the dispatcher and hold up every other task of the process; such pools get a
  thread of their own, which leaves when idle for a second.
* The current pool: a task running on an in-process backend (threads, serial)
  knows the pool it runs on, so the tasks it calls go to the same pool.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from manycore._api import Pool

__all__ = ["current_pool", "dispatch", "futures_in", "on_pool", "resolve", "to_lane"]

T = TypeVar("T")

_LANE_IDLE = 1.0  # seconds a lane thread waits for work before it leaves


class _Sendable(Protocol):
    def _dispatch(self) -> None: ...

    def _send(self) -> None: ...


# ------------------------------------------------------------------ dispatcher

_queue: queue.SimpleQueue[_Sendable] | None = None
_owner = 0  # the pid whose thread serves _queue (a child made by fork starts its own)
_lock = threading.Lock()


def dispatch(future: _Sendable) -> None:
    """Have ``future._dispatch()`` called on the dispatcher thread."""
    global _queue, _owner
    q = _queue
    if q is None or _owner != os.getpid():
        with _lock:
            if _queue is None or _owner != os.getpid():
                _queue, _owner = queue.SimpleQueue(), os.getpid()
                threading.Thread(
                    target=_serve, args=(_queue,), name="manycore-tasks", daemon=True
                ).start()
            q = _queue
    q.put(future)


def _serve(q: queue.SimpleQueue[_Sendable]) -> None:
    while True:
        future = q.get()  # a daemon thread: it idles here until there is work
        future._dispatch()  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
        del future


# ----------------------------------------------------------------------- lanes

_lanes: dict[int, deque[_Sendable]] = {}  # id(pool) -> its waiting tasks
_lanes_changed = threading.Condition(threading.Lock())


def to_lane(pool: Pool, future: _Sendable) -> None:
    """Have ``future._send()`` called on ``pool``'s own thread (for a backend
    that runs tasks inside ``submit``)."""
    key = id(pool)
    with _lanes_changed:
        lane = _lanes.get(key)
        if lane is None:
            lane = _lanes[key] = deque()
            threading.Thread(
                target=_run_lane, args=(key, lane), name="manycore-task-lane", daemon=True
            ).start()
        lane.append(future)
        _lanes_changed.notify_all()


def _run_lane(key: int, lane: deque[_Sendable]) -> None:
    while True:
        with _lanes_changed:
            if not lane:
                _lanes_changed.wait(_LANE_IDLE)
                if not lane:
                    del _lanes[key]  # to_lane starts a new thread for the next task
                    return
            future = lane.popleft()
        future._send()  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
        del future


# ---------------------------------------------------------------- current pool

_here = threading.local()


def current_pool() -> Pool | None:
    """The pool running the task that runs in this thread (threads and serial
    backends), or None."""
    return getattr(_here, "pool", None)


def on_pool(pool: Pool, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``fn(*args, **kwargs)``, with ``pool`` as this thread's current pool."""
    previous = getattr(_here, "pool", None)
    _here.pool = pool
    try:
        return fn(*args, **kwargs)
    finally:
        _here.pool = previous


# ------------------------------------------------------------------- arguments


def futures_in(obj: object, found: list[Future[Any]] | None = None) -> list[Future[Any]]:
    """The futures in ``obj``: itself, or inside lists, tuples and dict values,
    at any depth; each once, in order of appearance."""
    if found is None:
        found = []
    if isinstance(obj, Future):
        if not any(f is obj for f in found):
            found.append(obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            futures_in(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            futures_in(item, found)
    return found


def resolve(obj: object, instead: dict[int, object] | None = None) -> Any:
    """``obj`` with each (done) future replaced by its result, or by what
    ``instead`` gives for its id (a reference to the result on a cluster)."""
    if isinstance(obj, Future):
        if instead is not None and id(obj) in instead:
            return instead[id(obj)]
        return obj.result()
    if isinstance(obj, list):
        return [resolve(x, instead) for x in obj]
    if isinstance(obj, tuple):
        items = [resolve(x, instead) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, dict):
        out = obj.copy()
        for key, value in obj.items():
            out[key] = resolve(value, instead)
        return out
    return obj
