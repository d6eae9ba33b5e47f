"""A worker's mappings of the parent's argument segments, kept between tasks.

The parent reuses a few segments for the large arguments of a map (see
``_shm.SegmentPool``), so a worker sees the same names again and again. Mapping a
segment and faulting its pages in costs far more than reading them (16 MB: about
1.5 ms against 0.5 ms here), so a worker keeps its mappings and rebuilds each
task's arrays on the one it already has.

Two things make that safe:

* **A task that keeps its input.** An array the task stored somewhere (a global,
  the worker state) still points into the mapping after the task. Such a
  mapping leaves the cache, and the worker reports it as kept, so that the
  parent never writes another task's data into it.
* **Segments the parent dropped.** A mapping outlives the segment's name, so a
  cached mapping of a segment the parent unlinked would hold its memory for
  nothing. Each entry keeps a descriptor of the segment; :meth:`Mappings.sweep`
  closes those whose link count fell to zero. The worker sweeps before each task
  with shared arguments and, from its watchdog thread, about once a second.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from manycore._transport import _shm

__all__ = ["Mappings", "in_use"]

_MAX_COUNT = 8
_MAX_BYTES = 256 << 20


def in_use(segment: _shm.Segment) -> bool:
    """Whether some object still points into ``segment``'s mapping.

    ``mmap`` keeps a count of exported buffers but shows it only by refusing to
    close or resize while it is not zero; a resize to the same size changes
    nothing (an ``ftruncate`` and ``mremap`` to the sizes they already have) and
    leaves the mapping open, where ``close`` would end it.
    """
    try:
        segment.map.resize(len(segment.map))
    except BufferError:
        return True
    except (OSError, TypeError, ValueError, SystemError):  # cannot tell: assume it is
        return True
    return False


class _Entry:
    __slots__ = ("fd", "segment")

    def __init__(self, segment: _shm.Segment, fd: int):
        self.segment = segment
        self.fd = fd

    def stale(self) -> bool:
        try:
            return os.fstat(self.fd).st_nlink == 0
        except OSError:
            return True

    def close(self) -> None:
        os.close(self.fd)
        self.segment.close()  # a mapping still in use is unmapped by the GC later


class Mappings:
    """Segments this worker has mapped, by name; at most a few, least recent
    dropped first. A segment is lent to one task at a time (:meth:`take`) and
    given back after it (:meth:`give`); only entries not lent are swept."""

    def __init__(self, max_count: int = _MAX_COUNT, max_bytes: int = _MAX_BYTES):
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lent: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self._max_count = max_count
        self._max_bytes = max_bytes

    def take(self, name: str) -> _shm.Segment:
        """``name`` mapped read-write: the cached mapping, or a new one."""
        with self._lock:
            entry = self._entries.pop(name, None)
            if entry is not None and entry.stale():
                entry.close()
                entry = None
        if entry is None:
            segment = _shm.Segment.attach(name, populate=False)
            try:
                fd = _shm.open_fd(name)
            except BaseException:
                segment.close()
                raise
            entry = _Entry(segment, fd)
        with self._lock:
            self._lent[id(entry.segment)] = entry
        return entry.segment

    def give(self, segment: _shm.Segment) -> bool:
        """Take ``segment`` back after its task; False (and it leaves the cache)
        if the task kept an object that points into it."""
        with self._lock:
            entry = self._lent.pop(id(segment))
        if in_use(segment):
            os.close(entry.fd)
            segment.close()  # refused while in use: the GC unmaps it with the last user
            return False
        with self._lock:
            self._entries[segment.name] = entry
            self._trim_locked()
        return True

    def sweep(self) -> None:
        """Close the mappings of segments the parent has removed."""
        with self._lock:
            for name in [name for name, e in self._entries.items() if e.stale()]:
                self._entries.pop(name).close()

    def clear(self) -> None:
        with self._lock:
            while self._entries:
                self._entries.popitem()[1].close()

    def __len__(self) -> int:
        return len(self._entries)

    def _trim_locked(self) -> None:
        total = sum(e.segment.size for e in self._entries.values())
        while self._entries and (len(self._entries) > self._max_count or total > self._max_bytes):
            _, old = self._entries.popitem(last=False)
            total -= old.segment.size
            old.close()
