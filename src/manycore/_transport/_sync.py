"""Process-safe primitives that can be passed to tasks: ``Lock``, ``Semaphore``,
``Value``, ``Counter`` and ``Queue``.

The standard library's versions can reach a child process only by inheritance
("should only be shared between processes through inheritance"): they cannot be
task arguments. These pickle as *names*, and any process of the same user opens
the same object by name:

* ``Lock`` and ``Semaphore``: POSIX named semaphores (``/dev/shm/sem.manycore-*``);
* ``Value`` and ``Counter``: a few bytes in a shared-memory segment, with a lock;
* ``Queue``: a named pipe (FIFO) in a private temporary directory, one
  fixed-size record per item, which the kernel writes and reads whole (no lock).

The creating process owns the names and removes them when its object is garbage
collected; a worker only opens them. Each works on the threads backend too.
"""

from __future__ import annotations

import itertools
import os
import pickle
import queue
import secrets
import select
import shutil
import struct
import sys
import tempfile
import time
import weakref
from typing import Any, cast

from manycore._core import bad_wait_timeout, public
from manycore._transport import _shm, _wire

__all__ = ["Counter", "Lock", "Queue", "Semaphore", "Value"]

_SEMAPHORE = 1  # multiprocessing.synchronize.SEMAPHORE
_counter = itertools.count()
# Objects this process opened by name, so that each task gets the same one.
_opened: weakref.WeakValueDictionary[str, Semaphore | Value | Queue] = weakref.WeakValueDictionary()


def _semlock() -> Any:  # _multiprocessing.SemLock: no stubs
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
        raise bad_wait_timeout(timeout)
    return timeout


@public
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
            self._sem = semlock._rebuild(0, _SEMAPHORE, maxvalue, "/" + name)  # noqa: SLF001 - no public way to open a named SemLock
        self._name = name
        _opened[name] = self

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return bool(self._sem.acquire(block, _check_timeout(timeout)))

    def release(self) -> None:
        self._sem.release()

    def get_value(self) -> int:
        return int(self._sem._get_value())  # noqa: SLF001 - SemLock has no public reader

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[object, ...]:
        return (_open_semaphore, (type(self), self._name))

    def __repr__(self) -> str:
        return f"<manycore.{type(self).__name__} value={self.get_value()}>"


@public
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
        return cast("Semaphore", known)  # (the name says which kind)
    obj = cls.__new__(cls)
    obj._setup(name, 0, created=False)  # noqa: SLF001 - a factory of this module
    return obj


@public
class Value:
    """A number in shared memory: ``.value`` to read or write it, ``get_lock()``
    for read-modify-write sequences (``with v.get_lock(): v.value += 1``).

    ``typecode`` as in :mod:`array`/:mod:`struct`: ``"i"``, ``"q"``, ``"d"``, ...
    """

    def __init__(self, typecode: str = "q", value: object = 0):
        try:
            fmt = struct.Struct("=" + typecode)
        except (struct.error, TypeError):
            raise ValueError(
                "Value typecode must be a struct type code such as 'i', 'q' or 'd', "
                f"got {typecode!r}"
            ) from None
        _check_value(fmt, typecode, value)  # before a segment exists to be left behind
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
    def value(self) -> Any:  # an int or a float, by typecode
        return self._fmt.unpack_from(self._segment.map, 0)[0]

    @value.setter
    def value(self, new: object) -> None:
        # Checked whole before it is written: a failed pack_into has already
        # zeroed the shared value.
        _check_value(self._fmt, self._typecode, new)
        self._fmt.pack_into(self._segment.map, 0, new)

    def get_lock(self) -> Lock:
        return self._lock

    def __reduce__(self) -> tuple[object, ...]:
        return (_open_value, (type(self), self._segment.name, self._typecode, self._lock))

    def __repr__(self) -> str:
        return f"<manycore.{type(self).__name__}({self._typecode!r}, {self.value!r})>"


def _check_value(fmt: struct.Struct, typecode: str, value: object) -> None:
    """Refuse a value that typecode cannot hold, naming both (not a bare struct.error)."""
    try:
        fmt.pack(value)  # about 100 ns: no cost next to the shared write
    except struct.error as exc:
        kind = TypeError if not isinstance(value, (int, float, bytes)) else ValueError
        raise kind(
            f"Value value must be one number that typecode {typecode!r} can hold, got "
            f"{value!r:.80} ({exc})"
        ) from None


@public
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
        _shm.unlink_name(name)


def _made_in_worker() -> bool:
    # A worker may return what it made; the parent removes a worker's names when
    # that worker ends (see _shm.remove_segments_of), so they outlive the task.
    from manycore._transport import _shared

    return _shared.IN_WORKER


def _open_value(cls: type[Value], name: str, typecode: str, lock: Lock) -> Value:
    known = _opened.get(name)
    if known is not None:
        return cast("Value", known)  # (the name says which kind)
    obj = cls.__new__(cls)
    obj._setup(_shm.Segment.attach(name), typecode, lock)  # noqa: SLF001 - a factory of this module
    return obj


_RECORD = 4096  # bytes: at most PIPE_BUF, so the kernel writes and reads it whole
_HEAD = struct.Struct("<BI")  # kind, payload length
_INLINE = 0  # the payload is the pickled item
_IN_SEGMENT = 1  # the payload is the name of a segment holding the pickled item
_POLL_SLICE = 0.05  # seconds: an untimed wait re-checks this often (Ctrl-C, a lost race)


@public
class Queue:
    """A FIFO queue between processes and threads: ``put``, ``get`` (with
    ``block``/``timeout``, raising :class:`queue.Empty`/:class:`queue.Full`),
    ``put_nowait``, ``get_nowait``, ``qsize``, ``empty``, ``full``.

    Each item is one fixed-size record in a named pipe, written and read whole by
    the kernel, so no lock is held across processes: a producer or consumer killed
    in the middle cannot wedge the queue. An item that pickles to more than a
    record travels through a shared-memory segment named in its record. The pipe
    holds 256 records (1 MB); ``maxsize`` > 0 bounds the queue lower.
    """

    def __init__(self, maxsize: int = 0):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"Queue maxsize must be a whole number >= 0, got {maxsize!r}")
        folder = tempfile.mkdtemp(prefix=f"{_shm.PREFIX}{_shm.tag()}-")  # mode 0700: private
        path = os.path.join(folder, "queue")
        os.mkfifo(path, 0o600)
        weakref.finalize(self, _remove_folder, folder, os.getpid())
        self._setup(path, maxsize, os.getpid())

    def _setup(self, path: str, maxsize: int, creator: int) -> None:
        self._path = path
        self.maxsize = maxsize
        # A large item's segment is named as the creator's: it must outlive the
        # worker that put it (a pool removes a finished worker's segments), and
        # go when the queue's creator is gone.
        self._creator = creator
        # Opened at once, and kept open by the creating process for the queue's
        # life: a FIFO's buffer is thrown away when its last descriptor closes,
        # so a producer that finished before any consumer opened it would lose
        # its items. O_RDWR: opening never waits for the other side.
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        _wire.enlarge_pipe(self._fd)
        weakref.finalize(self, _close_quietly, self._fd)
        _opened[path] = self

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        record = self._record(item)
        deadline = _deadline(block, timeout)
        while True:
            if not self.maxsize or self.qsize() < self.maxsize:
                try:
                    os.write(self._fd, record)  # whole, or not at all (<= PIPE_BUF)
                    return
                except BlockingIOError:
                    pass
            if not _wait(self._fd, select.POLLOUT, deadline):
                _discard(record)
                raise queue.Full

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        deadline = _deadline(block, timeout)
        while True:
            try:
                record = os.read(self._fd, _RECORD)  # one whole record, or none
            except BlockingIOError:
                if not _wait(self._fd, select.POLLIN, deadline):
                    raise queue.Empty from None
                continue
            return _unpack(record)

    def put_nowait(self, item: object) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def qsize(self) -> int:
        import fcntl
        import termios

        waiting = bytearray(4)
        fcntl.ioctl(self._fd, termios.FIONREAD, waiting)
        return int.from_bytes(waiting, sys.byteorder) // _RECORD

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return bool(self.maxsize) and self.qsize() >= self.maxsize

    def _record(self, item: object) -> bytes:
        data = _dumps(item)
        if len(data) <= _RECORD - _HEAD.size:
            kind, payload = _INLINE, data
        else:
            segment, _ = _shm.pack([memoryview(data)], owner=self._creator)
            segment.close()
            kind, payload = _IN_SEGMENT, segment.name.encode()
        return (_HEAD.pack(kind, len(payload)) + payload).ljust(_RECORD, b"\0")

    def __reduce__(self) -> tuple[object, ...]:
        return (_open_queue, (self._path, self.maxsize, self._creator))

    def __repr__(self) -> str:
        return f"<manycore.Queue qsize={self.qsize()} maxsize={self.maxsize}>"


def _deadline(block: bool, timeout: float | None) -> float | None:
    if not block:
        return time.monotonic()
    _check_timeout(timeout)
    return None if timeout is None else time.monotonic() + timeout


def _wait(fd: int, event: int, deadline: float | None) -> bool:
    """Wait until ``fd`` is ready for ``event``; False once ``deadline`` passes."""
    poller = select.poll()
    poller.register(fd, event)
    while True:
        left = _POLL_SLICE if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return False
        if poller.poll(min(left, _POLL_SLICE) * 1000):
            return True


def _unpack(record: bytes) -> object:
    kind, size = _HEAD.unpack_from(record)
    payload = record[_HEAD.size : _HEAD.size + size]
    if kind == _INLINE:
        return pickle.loads(payload)
    segment = _shm.Segment.attach(payload.decode(), populate=False)
    segment.unlink()  # taken: nobody else will read it
    try:
        return pickle.loads(segment.map[: segment.size])
    finally:
        segment.close()


def _discard(record: bytes) -> None:
    """A record that was not put: remove its segment, if it has one."""
    kind, size = _HEAD.unpack_from(record)
    if kind == _IN_SEGMENT:
        _shm.unlink_name(record[_HEAD.size : _HEAD.size + size].decode())


def _dumps(item: object) -> bytes:
    from manycore._transport._serialize import dumps

    return dumps(item)


def _open_queue(path: str, maxsize: int, creator: int) -> Queue:
    known = _opened.get(path)
    if known is not None:
        return cast("Queue", known)  # (the name says which kind)
    obj = Queue.__new__(Queue)
    obj._setup(path, maxsize, creator)  # noqa: SLF001 - a factory of this module
    return obj


def _remove_folder(folder: str, creator: int) -> None:
    if os.getpid() == creator and not _made_in_worker():
        shutil.rmtree(folder, ignore_errors=True)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
