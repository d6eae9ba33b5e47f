"""Shared-memory segments: how large buffers cross between processes without pickling.

A large buffer in a task's arguments or result (a NumPy array, anything that
pickles with protocol 5's out-of-band buffers) is copied once into a POSIX
shared-memory segment; only the segment's name and the buffer's place in it go
through the pipe, and the receiver maps the segment and rebuilds the object on top
of the mapping, without a copy.

Who removes a segment, so that none is left in ``/dev/shm``:

* a task's arguments: the parent made the segment; it unlinks it when the task
  has its outcome (finished, failed, cancelled, or its worker died);
* a result: the worker made it; the parent unlinks it as soon as it has mapped it
  (the mapping outlives the name; the memory goes with the last array using it);
* :func:`manycore.shared_array`: unlinked when its last array in the creating
  process is garbage-collected;
* after a crash: each name carries the pid of the process that made it. A worker
  whose parent died removes the parent's segments; the parent removes a dead
  worker's; every new pool removes those of processes that no longer exist.

Segments are created with mode 0600: private to the user.
"""

from __future__ import annotations

import itertools
import mmap
import os
import threading

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from collections.abc import Sequence

try:
    import _posixshmem  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - not POSIX
    _posixshmem = None

__all__ = ["PREFIX", "THRESHOLD", "Segment", "available", "remove_orphans", "remove_segments_of"]

PREFIX = "manycore-"
THRESHOLD = 1 << 20  # buffers at least this big travel through shared memory
_ALIGN = 64  # each buffer starts on a cache line (and any dtype's alignment)
_SHM_DIR = "/dev/shm"
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
_POOL_BYTES = 256 << 20  # free segments a parent keeps for reuse, at most
_POOL_COUNT = 32
_counter = itertools.count()
_lock = threading.Lock()


def available() -> bool:
    return _posixshmem is not None


def _namespace() -> int:
    """This process's pid namespace (its inode), 0 where that cannot be known."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


_NAMESPACE = _namespace()


def tag(pid: int | None = None) -> str:
    """How names made by process ``pid`` start, after the prefix: the pid and its
    pid namespace, so that a janitor never judges a process it cannot see (a
    container sharing /dev/shm)."""
    return f"{os.getpid() if pid is None else pid}n{_NAMESPACE}"


def _new_name(owner: int | None = None) -> str:
    with _lock:
        n = next(_counter)
    return f"{PREFIX}{tag(owner)}-{n}-{os.urandom(4).hex()}"


class Segment:
    """One POSIX shared-memory segment, mapped in this process."""

    __slots__ = ("__weakref__", "map", "name", "owner", "size")

    def __init__(
        self, name: str, size: int, create: bool, populate: bool = True, readonly: bool = False
    ):
        assert _posixshmem is not None
        flags = os.O_RDONLY if readonly else os.O_RDWR
        flags |= os.O_CREAT | os.O_EXCL if create else 0
        fd = _posixshmem.shm_open("/" + name, flags, mode=0o600)
        try:
            if create:
                os.ftruncate(fd, max(size, 1))
                if hasattr(os, "posix_fallocate"):
                    # Reserve the memory now: tmpfs accepts any size, and running
                    # out later, while writing, kills the process with SIGBUS.
                    os.posix_fallocate(fd, 0, max(size, 1))
            else:
                size = os.fstat(fd).st_size
            # Faulting the pages in at once is much cheaper than one fault per page
            # on first touch (a fresh 8 MB segment: ~2,000 faults).
            flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
            prot = mmap.PROT_READ | (0 if readonly else mmap.PROT_WRITE)
            self.map = mmap.mmap(fd, max(size, 1), flags=flags, prot=prot)
        except BaseException:
            if create:
                unlink_name(name)
            raise
        finally:
            os.close(fd)
        self.name = name
        self.size = size
        self.owner = create

    @classmethod
    def create(cls, size: int, owner: int | None = None) -> Segment:
        """A new segment, named as made by process ``owner`` (default: this one):
        it is removed when that process is gone."""
        return cls(_new_name(owner), size, True)

    @classmethod
    def attach(cls, name: str, populate: bool = True, readonly: bool = False) -> Segment:
        """Map an existing segment; ``populate=False`` maps pages as they are
        touched (for a task that may read only part of what it was given)."""
        if not name.startswith(PREFIX):
            raise ValueError(f"not a manycore segment: {name!r}")
        return cls(name, 0, False, populate, readonly)

    def unlink(self) -> None:
        """Remove the name (the mapping stays valid until closed or collected)."""
        unlink_name(self.name)

    def close(self) -> bool:
        """Unmap; False if an object still uses the mapping (an array built on it),
        which the garbage collector then unmaps with the last such object."""
        try:
            self.map.close()
        except BufferError:
            return False
        return True


def open_fd(name: str) -> int:
    """A read-only descriptor of segment ``name`` (its ``st_nlink`` drops to 0
    once the name is removed)."""
    assert _posixshmem is not None
    fd: int = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
    return fd


def unlink_name(name: str) -> None:
    if _posixshmem is None:  # pragma: no cover
        return
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


def layout(buffers: Sequence[memoryview]) -> tuple[list[tuple[int, int]], int]:
    """Where each buffer goes in a segment, and the size it needs."""
    spans = []
    offset = 0
    for buf in buffers:
        spans.append((offset, buf.nbytes))
        offset += -(-buf.nbytes // _ALIGN) * _ALIGN
    return spans, offset


def pack(
    buffers: Sequence[memoryview], segment: Segment | None = None, owner: int | None = None
) -> tuple[Segment, list[tuple[int, int]]]:
    """Copy ``buffers`` (contiguous memoryviews) into ``segment`` (big enough) or
    into a new one (see :meth:`Segment.create` for ``owner``)."""
    spans, size = layout(buffers)
    if segment is None:
        segment = Segment.create(size, owner)
    try:
        view = memoryview(segment.map)
        for (start, size), buf in zip(spans, buffers, strict=True):
            view[start : start + size] = buf.cast("B")
        view.release()
    except BaseException:
        segment.unlink()
        segment.close()
        raise
    return segment, spans


class SegmentPool:
    """Segments a parent made for task arguments, kept for reuse.

    Creating a segment and touching its pages costs far more than copying into
    one already mapped (an 8 MB segment: ~8 ms against ~0.5 ms here). A segment
    goes back to the pool only when no worker can still be using it (see
    ``ProcessEngine``); the pool is bounded, and emptied at close.
    """

    def __init__(self) -> None:
        self._free: list[Segment] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> Segment:
        """A free segment of at least ``size`` bytes (sizes are powers of two, so
        that batches of somewhat different sizes share segments)."""
        size = 1 << max(size - 1, 1).bit_length()
        with self._lock:
            for seg in self._free:
                if seg.size == size:
                    self._free.remove(seg)
                    return seg
        return Segment.create(size)

    def give(self, segment: Segment, reusable: bool) -> None:
        if reusable:
            with self._lock:
                self._free.append(segment)
                total = sum(s.size for s in self._free)
                while self._free and (len(self._free) > _POOL_COUNT or total > _POOL_BYTES):
                    old = self._free.pop(0)
                    total -= old.size
                    self._drop(old)
            return
        with self._lock:
            self._drop(segment)

    def _drop(self, segment: Segment) -> None:
        segment.unlink()
        segment.close()

    def close(self) -> None:
        with self._lock:
            while self._free:
                self._drop(self._free.pop())


def views(segment: Segment, spans: list[tuple[int, int]]) -> list[memoryview]:
    """The buffers packed by :func:`pack`, as views into ``segment``'s mapping."""
    whole = memoryview(segment.map)
    return [whole[start : start + size] for start, size in spans]


def creator(name: str) -> int | None:
    """The pid of the process that made a segment, if it is in our pid namespace
    (None for another namespace's: its pids mean nothing here)."""
    pid, _, space = name[len(PREFIX) :].split("-", 1)[0].partition("n")
    try:
        return int(pid) if int(space) == _NAMESPACE else None
    except ValueError:
        return None


def rename(name: str) -> str:
    """Give a segment a name of this process's (Linux keeps segments as files in
    /dev/shm, so this is a rename); the old name if that is not possible."""
    new = _new_name()
    try:
        os.rename(os.path.join(_SHM_DIR, name), os.path.join(_SHM_DIR, new))
    except OSError:
        return name
    return new


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (as far as this process can see)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ours() -> list[tuple[str, int]]:
    """(file name in /dev/shm, creator pid) of every manycore segment and named
    semaphore (``sem.manycore-...``, see :mod:`manycore._transport._sync`) visible here."""
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:
        return []
    found = []
    for name in names:
        bare = name[4:] if name.startswith("sem.") else name
        pid = creator(bare) if bare.startswith(PREFIX) else None
        if pid is not None:
            found.append((name, pid))
    return found


def _remove_file(name: str) -> None:
    try:
        os.unlink(os.path.join(_SHM_DIR, name))
    except OSError:
        pass


def remove_segments_of(pid: int) -> int:
    """Remove the segments and semaphores made by process ``pid`` (which has
    died); how many."""
    gone = 0
    for name, pid_of in _ours():
        if pid_of == pid:
            _remove_file(name)
            gone += 1
    return gone


def remove_orphans() -> int:
    """Remove the segments and semaphores whose creator no longer exists."""
    gone = 0
    for name, pid_of in _ours():
        if not alive(pid_of):
            _remove_file(name)
            gone += 1
    return gone
