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
    """Accumulates bytes read from a non-blocking pipe and yields whole frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while True:
            if end - pos < HEADER.size:
                break
            (size,) = HEADER.unpack_from(buf, pos)
            if end - pos - HEADER.size < size:
                break
            start = pos + HEADER.size
            frames.append(bytes(buf[start : start + size]))
            pos = start + size
        if pos:
            del buf[:pos]
        return frames


def enlarge_pipe(fd: int, size: int = 1 << 20) -> None:
    """Ask Linux for a bigger pipe buffer: fewer wake-ups for large messages."""
    import fcntl

    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default works
