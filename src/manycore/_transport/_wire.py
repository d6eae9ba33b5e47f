"""Framing on the pipes between the parent and a worker.

A frame is an 8-byte little-endian length followed by that many bytes. Workers use
the blocking helpers here; the parent parses frames out of a non-blocking read
buffer with :class:`FrameBuffer`.

What the frames hold:

* parent -> worker, first: pickle of ``(CONFIG, init_blob)``;
* parent -> worker, then one per batch: a 4-byte head size, the pickled head
  ``(key, fn_id, fn_blob or None, reset_cache, star)``, then the pickled body
  ``(items, kwargs)``, pickled once in the caller's thread and never copied;
* parent -> worker, before the first batch of a function that reads a large
  global of a script: the same framing, with the head
  ``(None, key, gid, size, buffer sizes)`` and the global's bytes as the body
  (see :mod:`manycore._transport._bigglobals`);
* parent -> worker, last: an empty frame (``STOP``) before a normal close;
* worker -> parent: pickle of ``(RESULT, key, values, failures, elapsed, unrun)``
  or of ``(INIT_FAILED, error_wire)``; ``(RETIRE,)`` after a worker's last result.
"""

from __future__ import annotations

import os
import struct

__all__ = [
    "HEADER",
    "FrameBuffer",
    "enlarge_pipe",
    "frame",
    "read_frame",
    "write_all",
]

HEADER = struct.Struct("<Q")
_SMALL = 1 << 16
_BIG_READ = 1 << 24  # frames above this are read into one writable buffer

# Kinds of the pickled messages (their first element).
RESULT = 1
INIT_FAILED = 2
CONFIG = 3
RETIRE = 4  # the worker exits after the result before this (task or memory limit)
RESULT_OOB = 5  # (RESULT_OOB, segment name, spans, result pickled without its big buffers)

# The progress slot a worker shares with the parent (a small memfd), a seqlock:
# the worker makes GEN odd, writes RUNNING, makes GEN even again; a reader that
# sees GEN odd or changed across its read discards what it read.
GEN = struct.Struct("<q")
RUNNING = struct.Struct("<qqd")  # at GEN.size: batch key, item offset, monotonic start
SKIP = struct.Struct("<q")  # at SKIP_AT: key of a queued batch the worker must skip
SKIP_AT = GEN.size + RUNNING.size
# Written by the worker alone, each one aligned 8-byte store (read whole): the key
# of the last batch it read from its pipe and when (the time is stored first), when
# it had read its configuration ("booted") and when its init returned ("ready"), as
# monotonic times (0: not yet).
# The parent judges a dead or late worker by them: a batch it never read is no
# item's failure; a death before "ready" is its init's.
KEY = struct.Struct("<q")
TIME = struct.Struct("<d")
ACK_AT = SKIP_AT + SKIP.size
ACK_TIME_AT = ACK_AT + KEY.size
BOOTED_AT = ACK_TIME_AT + TIME.size
READY_AT = BOOTED_AT + TIME.size
SLOT_SIZE = READY_AT + TIME.size

# An empty frame from the parent: "stop now, I am closing you" (an end of file
# without it means the parent died: see _worker).
STOP = HEADER.pack(0)


def frame(payload: bytes) -> list[bytes]:
    """The buffers to write for one frame (joined when small: one syscall)."""
    header = HEADER.pack(len(payload))
    if len(payload) < _SMALL:
        return [header + payload]
    return [header, payload]


def write_all(fd: int, buffers: list[bytes]) -> None:
    """Blocking write of every buffer (worker side)."""
    for buf in buffers:
        view = memoryview(buf)
        while view:
            n = os.write(fd, view)
            view = view[n:]


def _read_exact(fd: int, n: int) -> bytes | bytearray | None:
    if n > _BIG_READ:  # one buffer, filled in place: no chunks to join (twice the memory)
        return _read_into(fd, n)
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_into(fd: int, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    while view:
        got = os.readv(fd, [view[: 1 << 24]])
        if not got:
            return None
        view = view[got:]
    return buf


def read_frame(fd: int) -> bytes | bytearray | None:
    """Blocking read of one frame; ``None`` at end of file (the parent is gone)."""
    header = _read_exact(fd, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    return _read_exact(fd, size) if size else b""


class FrameBuffer:
    """Reads a non-blocking pipe and cuts what it read into whole frames.

    It reads into a buffer it keeps, so a read allocates nothing (``os.read(fd,
    1 MB)`` maps, shrinks and unmaps a megabyte each time: most of a small round
    trip's system time). A frame too large for that buffer is read straight into
    one of its own, which is handed out as it is: its bytes are copied once, by
    the kernel.
    """

    __slots__ = ("_big", "_buf", "_end", "_got", "_view")

    def __init__(self, size: int = _SMALL) -> None:
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        self._end = 0  # the end of what was read (an unfinished frame starts at 0)
        self._big: memoryview | None = None  # a large frame's own buffer, being filled
        self._got = 0  # bytes of it read so far

    def read(self, fd: int) -> list[bytes | bytearray] | None:
        """The frames that one read of ``fd`` completes (perhaps none); None at end
        of file. Raises BlockingIOError when nothing is there to read."""
        big = self._big
        if big is not None:
            n = os.readv(fd, [big[self._got :]])
            if not n:
                return None
            self._got += n
            if self._got < len(big):
                return []
            self._big = None
            return [big.obj]  # type: ignore[list-item]  # (the bytearray it views)
        n = os.readv(fd, [self._view[self._end :]])
        if not n:
            return None
        self._end += n
        return self._cut()

    def _cut(self) -> list[bytes | bytearray]:
        frames: list[bytes | bytearray] = []
        view, pos, end = self._view, 0, self._end
        while end - pos >= HEADER.size:
            (size,) = HEADER.unpack_from(view, pos)
            start = pos + HEADER.size
            if end - start < size:
                if HEADER.size + size > len(view):  # it gets a buffer of its own
                    self._begin_big(start, size)
                    return frames
                break
            frames.append(bytes(view[start : start + size]))
            pos = start + size
        self._keep(pos)
        return frames

    def _begin_big(self, start: int, size: int) -> None:
        got = self._end - start
        big = memoryview(bytearray(size))
        big[:got] = self._view[start : self._end]
        self._big, self._got = big, got
        self._end = 0

    def _keep(self, pos: int) -> None:
        """Move the start of an unfinished frame at ``pos`` to the front, where
        the rest of it will fit."""
        rest = self._end - pos
        if rest and pos:
            self._view[:rest] = self._view[pos : self._end]
        self._end = rest


def enlarge_pipe(fd: int, size: int = 1 << 20) -> None:
    """Ask Linux for a bigger pipe buffer: fewer wake-ups for large messages."""
    import fcntl

    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default works
