"""Locks, semaphores, values, counters and queues on a cluster: ``pool.Lock()``
and friends on ``backend="dask"`` or ``"ray"``.

They have the methods of :mod:`manycore._transport._sync`'s (and of the standard library's)
and are built on the engine's own primitives, so they work across machines and
from the parent as well as from tasks; they pickle by name.

* Dask: ``distributed.Lock``, ``Semaphore``, ``Queue`` and ``Variable`` (with a
  lock around read-modify-write for counters), reached through the pool's client
  in the parent and the worker's client in a task.
* Ray: one small actor per object. Its methods never block (an actor serves one
  call at a time), so a blocking ``acquire`` polls, with a backoff up to 50 ms,
  until its timeout.
"""

from __future__ import annotations

import contextlib
import pickle
import queue
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from manycore._core import bad_wait_timeout

__all__ = ["make"]

_POLL_MAX = 0.05
T = TypeVar("T")
# A distributed.Client, and Dask's and Ray's objects: their calls are untyped.
Client = Any


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout >= 0:
        raise bad_wait_timeout(timeout)


def make(engine: str, kind: str, args: tuple[object, ...], client: Client | None = None) -> object:
    """A ``kind`` object ("Lock", "Semaphore", "Value", "Counter", "Queue") on ``engine``."""
    name = f"manycore-{kind.lower()}-{uuid.uuid4().hex}"
    if engine == "dask":
        return _DASK[kind](name, *args, client=client)
    actor = _ray_actor()(kind, args)
    return _RAY[kind](actor)


# ----------------------------------------------------------------------- Dask


class _DaskObject:
    def __init__(self, name: str, client: Client | None = None):
        self.name = name
        self._client = client  # the pool's, in the parent; a task uses its worker's

    def _here(self) -> contextlib.AbstractContextManager[object]:
        """Where Dask's primitives find their scheduler: the pool's client (it is
        not the process's default one), or in a task, the worker's."""
        return contextlib.nullcontext() if self._client is None else self._client.as_current()

    def __reduce__(self) -> tuple[Callable[..., _DaskObject], tuple[str, tuple[object, ...]]]:
        return (_rebuild_dask, (type(self).__name__, self._state()))

    def _state(self) -> tuple[object, ...]:
        return (self.name,)


def _rebuild_dask(kind: str, state: tuple[object, ...]) -> _DaskObject:
    return _DASK_CLASSES[kind](*state)


def _distributed() -> Any:  # the module: see Client
    import distributed

    return distributed


class DaskLock(_DaskObject):
    def __init__(self, name: str, client: Client | None = None):
        super().__init__(name, client)
        with self._here():
            self._lock = _distributed().Lock(name)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        with self._here():
            return bool(self._lock.acquire(blocking=block, timeout=timeout if block else None))

    def release(self) -> None:
        with self._here():
            self._lock.release()

    def locked(self) -> bool:
        with self._here():
            return bool(self._lock.locked())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class DaskSemaphore(_DaskObject):
    def __init__(self, name: str, value: int = 1, client: Client | None = None):
        super().__init__(name, client)
        self.max = value
        with self._here():
            self._sem = _distributed().Semaphore(max_leases=value, name=name)

    def _state(self) -> tuple[object, ...]:
        return (self.name, self.max)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        _check_timeout(timeout)
        with self._here():
            return bool(self._sem.acquire(timeout=timeout if block else 0))

    def get_value(self) -> int:
        with self._here():
            return int(self.max - self._sem.get_value())

    def release(self) -> None:
        with self._here():
            self._sem.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class DaskValue(_DaskObject):
    def __init__(
        self,
        name: str,
        typecode: str = "q",
        value: object = 0,
        fresh: bool = True,
        client: Client | None = None,
    ):
        super().__init__(name, client)
        self.typecode = typecode
        self._var = _distributed().Variable(name, client=client)
        self._lock = DaskLock(name + "-lock", client=client)
        if fresh:
            self._var.set(value)

    def _state(self) -> tuple[object, ...]:
        return (self.name, self.typecode, None, False)

    @property
    def value(self) -> object:
        return self._var.get()

    @value.setter
    def value(self, new: object) -> None:
        self._var.set(new)

    def get_lock(self) -> DaskLock:
        return self._lock


class DaskCounter(DaskValue):
    def __init__(self, name: str, value: int = 0, fresh: bool = True, client: Client | None = None):
        super().__init__(name, "q", value, fresh, client)

    def _state(self) -> tuple[object, ...]:
        return (self.name, None, False)

    def increment(self, by: int = 1) -> int:
        with self._lock:
            new = int(self._var.get()) + by
            self._var.set(new)
        return new


class DaskQueue(_DaskObject):
    def __init__(self, name: str, maxsize: int = 0, client: Client | None = None):
        super().__init__(name, client)
        self.maxsize = maxsize
        self._queue = _distributed().Queue(name, client=client, maxsize=maxsize)

    def _state(self) -> tuple[object, ...]:
        return (self.name, self.maxsize)

    # Items go pickled: Dask's queue would send them through msgpack, which turns
    # a namedtuple into a tuple.
    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        if not block and self.full():
            raise queue.Full
        try:
            self._queue.put(pickle.dumps(item, 5), timeout=timeout if block else 0)
        except TimeoutError:
            raise queue.Full from None

    def get(self, block: bool = True, timeout: float | None = None) -> object:
        if not block and self.empty():  # (no scheduler error log for a plain miss)
            raise queue.Empty
        try:
            return pickle.loads(self._queue.get(timeout=timeout if block else 0))
        except TimeoutError:
            raise queue.Empty from None

    def full(self) -> bool:
        return 0 < self.maxsize <= self.qsize()

    def put_nowait(self, item: object) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> object:
        return self.get(block=False)

    def qsize(self) -> int:
        return int(self._queue.qsize())

    def empty(self) -> bool:
        return self.qsize() == 0


_DASK: dict[str, Callable[..., _DaskObject]] = {
    "Lock": DaskLock,
    "Semaphore": DaskSemaphore,
    "Value": DaskValue,
    "Counter": DaskCounter,
    "Queue": DaskQueue,
}
_DASK_CLASSES = {cls.__name__: cls for cls in _DASK.values()}


# ------------------------------------------------------------------------ Ray


class _SyncState:
    """The actor behind one Ray object (its methods never block)."""

    def __init__(self, kind: str, args: tuple[Any, ...]):  # make()'s, as the pool checked them
        import collections

        self.kind = kind
        self.leases = 0
        # Leases (a Value's or Counter's lease is its get_lock()); a queue's maxsize.
        self.limit: int = args[0] if kind in ("Semaphore", "Queue") and args else 1
        # A Value's (any object) or a Counter's (a number, added to).
        self.value: Any
        if kind == "Value":
            self.value = args[1] if len(args) > 1 else 0
        else:
            self.value = args[0] if kind == "Counter" and args else 0
        self.items: collections.deque[object] = collections.deque()

    def try_acquire(self) -> bool:
        if self.leases < self.limit:
            self.leases += 1
            return True
        return False

    def release(self) -> None:
        if self.leases <= 0:
            raise ValueError("released too many times")
        self.leases -= 1

    def leased(self) -> int:
        return self.leases

    def get(self) -> object:
        return self.value

    def set(self, value: object) -> None:
        self.value = value

    def add(self, by: int) -> int:
        self.value += by
        return int(self.value)

    def push(self, item: object) -> bool:
        if 0 < self.limit <= len(self.items):
            return False
        self.items.append(item)
        return True

    def pop(self) -> tuple[bool, object]:
        return (True, self.items.popleft()) if self.items else (False, None)

    def size(self) -> int:
        return len(self.items)

    def is_full(self) -> bool:
        return 0 < self.limit <= len(self.items)

    def free(self) -> int:
        return int(self.limit - self.leases)


_actor_class: Any = None  # ray.remote(_SyncState)


def _ray_actor() -> Callable[[str, tuple[object, ...]], object]:
    global _actor_class
    import ray

    if _actor_class is None:
        _actor_class = ray.remote(num_cpus=0)(_SyncState)
    cls = _actor_class

    def create(kind: str, args: tuple[object, ...]) -> object:
        return cls.remote(kind, args)

    return create


def _poll(
    attempt: Callable[[], T], block: bool, timeout: float | None, ok: Callable[[T], object] = bool
) -> T:
    """Call ``attempt()`` until ``ok(answer)`` or the time is up; the last answer."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.001
    while True:
        answer = attempt()
        if ok(answer) or not block:
            return answer
        if deadline is not None and time.monotonic() >= deadline:
            return answer
        time.sleep(pause)
        pause = min(pause * 2, _POLL_MAX)


class _RayObject:
    def __init__(self, actor: object):
        self.actor = actor  # the _SyncState actor's handle: passed along

    def __reduce__(self) -> tuple[type[_RayObject], tuple[object]]:
        return (type(self), (self.actor,))

    def _call(self, method: str, *args: object) -> Any:  # what ray.get gives: untyped
        import ray

        return ray.get(getattr(self.actor, method).remote(*args), timeout=60)


class RaySemaphore(_RayObject):
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        _check_timeout(timeout)
        return bool(_poll(lambda: self._call("try_acquire"), block, timeout))

    def release(self) -> None:
        self._call("release")

    def get_value(self) -> int:
        return int(self._call("free"))

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class RayLock(RaySemaphore):
    def locked(self) -> bool:
        return bool(self._call("leased") > 0)


class RayValue(_RayObject):
    def get_lock(self) -> RayLock:
        """The value's own lock (the same actor): ``increment`` takes it too."""
        return RayLock(self.actor)

    @property
    def value(self) -> object:
        return self._call("get")

    @value.setter
    def value(self, new: object) -> None:
        self._call("set", new)


class RayCounter(RayValue):
    def increment(self, by: int = 1) -> int:
        with self.get_lock():  # excludes a read-modify-write under get_lock()
            return int(self._call("add", by))


class RayQueue(_RayObject):
    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        if not _poll(lambda: self._call("push", item), block, timeout):
            raise queue.Full

    def get(self, block: bool = True, timeout: float | None = None) -> object:
        found, item = _poll(lambda: self._call("pop"), block, timeout, ok=lambda a: a[0])
        if not found:
            raise queue.Empty
        return item

    def put_nowait(self, item: object) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> object:
        return self.get(block=False)

    def qsize(self) -> int:
        return int(self._call("size"))

    def full(self) -> bool:
        return bool(self._call("is_full"))

    def empty(self) -> bool:
        return self.qsize() == 0


_RAY: dict[str, type[_RayObject]] = {
    "Lock": RayLock,
    "Semaphore": RaySemaphore,
    "Value": RayValue,
    "Counter": RayCounter,
    "Queue": RayQueue,
}
