"""Process-safe primitives that can be passed to tasks: ``Lock``, ``Semaphore``,
``Value``, ``Counter`` and ``Queue``.

The standard library's versions can reach a child process only by inheritance
("should only be shared between processes through inheritance"): they cannot be
task arguments. These pickle as *names*, and any process of the same user opens
the same object by name:

* ``Lock`` and ``Semaphore``: POSIX named semaphores (``/dev/shm/sem.manycore-*``);
* ``Value`` and ``Counter``: a few bytes in a shared-memory segment, with a lock;
* ``Queue``: a named pipe (FIFO) in a private temporary directory, with a lock on
  each side so that messages never interleave, and a semaphore counting items.

The creating process owns the names and removes them when its object is garbage
collected; a worker only opens them. Each works on the threads backend too.
"""

from __future__ import annotations

import itertools
import os
import pickle
import queue
import secrets
import shutil
import struct
import tempfile
import weakref
from typing import Any

from . import _shm, _wire

__all__ = ["Counter", "Lock", "Queue", "Semaphore", "Value"]

_SEMAPHORE = 1  # multiprocessing.synchronize.SEMAPHORE
_counter = itertools.count()
# Objects this process opened by name, so that each task gets the same one.
_opened: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def _semlock() -> Any:
    import _multiprocessing  # type: ignore[import-not-found]

    return _multiprocessing.SemLock


def _name(kind: str) -> str:
    return f"{_shm.PREFIX}{_shm.tag()}-{kind}{next(_counter)}-{secrets.token_hex(4)}"


def _unlink_semaphore(name: str, creator: int) -> None:
    if os.getpid() != creator or _made_in_worker():
        return  # a forked child's inherited copy; or a worker's, which it may return
    import _multiprocessing

    try:
        _multiprocessing.sem_unlink("/" + name)
    except (FileNotFoundError, OSError):
        pass


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and (isinstance(timeout, bool) or not timeout >= 0):
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    return timeout


class Semaphore:
    """A counting semaphore shared by every process and thread it reaches.

    ``acquire(block=True, timeout=None)``, ``release()``, ``get_value()``, and use
    as a context manager, as :class:`threading.Semaphore`.
    """

    _kind = "sem"

    def __init__(self, value: int = 1):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"{type(self).__name__} value must be a whole number >= 0, got {value!r}"
            )
        self._setup(_name(self._kind), value, created=True)

    def _setup(self, name: str, value: int, created: bool) -> None:
        semlock = _semlock()
        maxvalue = 1 if self._kind == "lock" else semlock.SEM_VALUE_MAX
        if created:
            self._sem = semlock(_SEMAPHORE, value, maxvalue, "/" + name, False)
            weakref.finalize(self, _unlink_semaphore, name, os.getpid())
        else:
            self._sem = semlock._rebuild(0, _SEMAPHORE, maxvalue, "/" + name)
        self._name = name
        _opened[name] = self

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return bool(self._sem.acquire(block, _check_timeout(timeout)))

    def release(self) -> None:
        self._sem.release()

    def get_value(self) -> int:
        return int(self._sem._get_value())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_open_semaphore, (type(self), self._name))

    def __repr__(self) -> str:
        return f"<manycore.{type(self).__name__} value={self.get_value()}>"


class Lock(Semaphore):
    """A lock shared by every process and thread it reaches (a semaphore of 1;
    any holder may release it, as with :class:`multiprocessing.Lock`)."""

    _kind = "lock"

    def __init__(self) -> None:
        super().__init__(1)

    def locked(self) -> bool:
        return self.get_value() == 0

    def __repr__(self) -> str:
        return f"<manycore.Lock {'locked' if self.locked() else 'unlocked'}>"


def _open_semaphore(cls: type[Semaphore], name: str) -> Semaphore:
    known = _opened.get(name)
    if known is not None:
        return known  # type: ignore[no-any-return]
    obj = cls.__new__(cls)
    obj._setup(name, 0, created=False)
    return obj


class Value:
    """A number in shared memory: ``.value`` to read or write it, ``get_lock()``
    for read-modify-write sequences (``with v.get_lock(): v.value += 1``).

    ``typecode`` as in :mod:`array`/:mod:`struct`: ``"i"``, ``"q"``, ``"d"``, ...
    """

    def __init__(self, typecode: str = "q", value: Any = 0):
        try:
            fmt = struct.Struct("=" + typecode)
        except (struct.error, TypeError):
            raise ValueError(
                "Value typecode must be a struct type code such as 'i', 'q' or 'd', "
                f"got {typecode!r}"
            ) from None
        segment = _shm.Segment.create(fmt.size)
        weakref.finalize(self, _unlink_segment, segment.name, os.getpid())
        self._setup(segment, typecode, Lock())
        self.value = value

    def _setup(self, segment: _shm.Segment, typecode: str, lock: Lock) -> None:
        self._segment = segment
        self._typecode = typecode
        self._fmt = struct.Struct("=" + typecode)
        self._lock = lock
        _opened[segment.name] = self

    @property
    def value(self) -> Any:
        return self._fmt.unpack_from(self._segment.map, 0)[0]

    @value.setter
    def value(self, new: Any) -> None:
        self._fmt.pack_into(self._segment.map, 0, new)

    def get_lock(self) -> Lock:
        return self._lock

    def __reduce__(self) -> tuple[Any, ...]:
        return (_open_value, (type(self), self._segment.name, self._typecode, self._lock))

    def __repr__(self) -> str:
        return f"<manycore.{type(self).__name__}({self._typecode!r}, {self.value!r})>"


class Counter(Value):
    """A shared integer that many tasks can add to without losing an update."""

    def __init__(self, value: int = 0):
        super().__init__("q", value)

    def increment(self, by: int = 1) -> int:
        """Add ``by`` (atomically) and return the new value."""
        with self._lock:
            new = self.value + by
            self.value = new
        return int(new)

    def __repr__(self) -> str:
        return f"<manycore.Counter {self.value}>"


def _unlink_segment(name: str, creator: int) -> None:
    if os.getpid() == creator and not _made_in_worker():
        _shm._unlink(name)


def _made_in_worker() -> bool:
    # A worker may return what it made; the parent removes a worker's names when
    # that worker ends (see _shm.remove_segments_of), so they outlive the task.
    from . import _shared

    return _shared.IN_WORKER


def _open_value(cls: type[Value], name: str, typecode: str, lock: Lock) -> Value:
    known = _opened.get(name)
    if known is not None:
        return known  # type: ignore[no-any-return]
    obj = cls.__new__(cls)
    obj._setup(_shm.Segment.attach(name), typecode, lock)
    return obj


class Queue:
    """A FIFO queue between processes and threads: ``put``, ``get`` (with
    ``block``/``timeout``, raising :class:`queue.Empty`/:class:`queue.Full`),
    ``put_nowait``, ``get_nowait``, ``qsize``, ``empty``.

    Items are pickled; ``maxsize`` > 0 bounds how many wait in the queue. A
    ``put`` returns once its item is in the pipe (1 MB here): a larger item, or
    a full pipe, makes it wait for a consumer, as a pipe does; there is no
    background thread holding items that a worker's exit could lose.
    """

    def __init__(self, maxsize: int = 0):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"Queue maxsize must be a whole number >= 0, got {maxsize!r}")
        folder = tempfile.mkdtemp(prefix=f"{_shm.PREFIX}{_shm.tag()}-")  # mode 0700: private
        path = os.path.join(folder, "queue")
        os.mkfifo(path, 0o600)
        weakref.finalize(self, _remove_folder, folder, os.getpid())
        slots = Semaphore(maxsize) if maxsize else None
        self._setup(path, maxsize, Semaphore(0), Lock(), Lock(), slots)

    def _setup(
        self,
        path: str,
        maxsize: int,
        items: Semaphore,
        put_lock: Lock,
        get_lock: Lock,
        slots: Semaphore | None,
    ) -> None:
        self._path = path
        self.maxsize = maxsize
        self._items = items
        self._put_lock = put_lock
        self._get_lock = get_lock
        self._slots = slots
        # Opened at once, and kept open by the creating process for the queue's
        # life: a FIFO's buffer is thrown away when its last descriptor closes,
        # so a producer that finished before any consumer opened it would lose
        # its items. O_RDWR: opening never waits for the other side.
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        _wire.enlarge_pipe(self._fd)
        weakref.finalize(self, _close_quietly, self._fd)
        _opened[path] = self

    def _pipe(self) -> int:
        return self._fd

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        data = _dumps(item)
        if self._slots is not None and not self._slots.acquire(block, timeout):
            raise queue.Full
        frame = b"".join(_wire.frame(data))
        fd = self._pipe()
        with self._put_lock:  # a message is written whole, never interleaved
            # Counted before it is written: a message larger than the pipe can
            # only be written while a reader takes it out.
            self._items.release()
            view = memoryview(frame)
            while view:
                view = view[os.write(fd, view) :]

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not self._items.acquire(block, timeout):
            raise queue.Empty
        fd = self._pipe()
        with self._get_lock:
            (size,) = _wire.HEADER.unpack(_read(fd, _wire.HEADER.size))
            data = _read(fd, size)
        if self._slots is not None:
            self._slots.release()
        return pickle.loads(data)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def qsize(self) -> int:
        return self._items.get_value()

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return self._slots is not None and self._slots.get_value() == 0

    def __reduce__(self) -> tuple[Any, ...]:
        state = (self._path, self.maxsize, self._items, self._put_lock, self._get_lock, self._slots)
        return (_open_queue, state)

    def __repr__(self) -> str:
        return f"<manycore.Queue qsize={self.qsize()} maxsize={self.maxsize}>"


def _read(fd: int, n: int) -> bytes:
    """Read ``n`` bytes: the item was counted, so its writer is writing them now."""
    chunks = []
    while n:
        chunk = os.read(fd, n)
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _dumps(item: Any) -> bytes:
    from ._serialize import dumps

    return dumps(item)


def _open_queue(
    path: str,
    maxsize: int,
    items: Semaphore,
    put_lock: Lock,
    get_lock: Lock,
    slots: Semaphore | None,
) -> Queue:
    known = _opened.get(path)
    if known is not None:
        return known  # type: ignore[no-any-return]
    obj = Queue.__new__(Queue)
    obj._setup(path, maxsize, items, put_lock, get_lock, slots)
    return obj


def _remove_folder(folder: str, creator: int) -> None:
    if os.getpid() == creator and not _made_in_worker():
        shutil.rmtree(folder, ignore_errors=True)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
