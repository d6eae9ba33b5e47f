"""What goes down a worker's pipe, made in the caller's thread: a batch's
arguments pickled (large buffers copied into a shared-memory segment instead),
the pool's ``shared`` object, and the ids that let a worker keep functions it
has already loaded.

Pickling happens here, before the batch is queued, so that an argument that
cannot be pickled raises at once and names itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from manycore._core import Batch, SerializationError
from manycore._transport import _shm
from manycore._transport._serialize import describe_batch, dumps, why

__all__ = ["FN_LIMIT", "FnIds", "encode_args", "pack_shared"]

if TYPE_CHECKING:
    from typing import TypeAlias

    # Pool(shared=...) as every worker gets it: the pickle, and the segment and
    # spans of its large buffers (None, None: they are in the pickle).
    Shared: TypeAlias = tuple[bytes, str | None, list[tuple[int, int]] | None]

FN_LIMIT = 128  # functions a worker caches before the parent tells it to forget


def encode_args(
    batch: Batch, segments: _shm.SegmentPool
) -> tuple[bytes, tuple[str, list[tuple[int, int]]] | None, _shm.Segment | None]:
    """``(body, oob, segment)``: the pickled items and kwargs; with large buffers,
    where they sit in ``segment`` (taken from ``segments``), else None."""
    big: list[memoryview] | None = [] if _shm.available() else None
    try:
        body = dumps((batch.items, batch.kwargs), big)
    except BaseException as exc:  # a __reduce__ that raises SystemExit must not end the caller
        err = describe_batch(batch)  # pickles item by item: what fails again is the item's doing
        if err is None:
            if isinstance(exc, KeyboardInterrupt):
                raise  # a real Ctrl-C: it did not happen again
            err = SerializationError(f"cannot pickle the task's arguments: {why(exc)}")
            err.__cause__ = exc
        raise err from err.__cause__
    if not big:
        return body, None, None
    try:  # large buffers: one copy into shared memory, not through the pipe
        segment = segments.take(_shm.layout(big)[1])
        segment, spans = _shm.pack(big, segment)
    except OSError:  # no room in /dev/shm (a small container): use the pipe
        return dumps((batch.items, batch.kwargs)), None, None
    return body, (segment.name, spans), segment


def pack_shared(obj: object) -> tuple[Shared | None, _shm.Segment | None]:
    """``Pool(shared=obj)`` pickled once for every worker, and the segment that
    holds its large buffers (the workers map it read-only, for the pool's life)."""
    if obj is None:
        return None, None
    big: list[memoryview] | None = [] if _shm.available() else None
    data = dumps(obj, big)
    if not big:
        return (data, None, None), None
    try:
        segment, spans = _shm.pack(big)
    except OSError:  # no room in /dev/shm: each worker gets its own copy
        return (dumps(obj), None, None), None
    return (data, segment.name, spans), segment


class FnIds:
    """A number for each pickled function, so that a worker loads each once.
    Ids are never reused; past :data:`FN_LIMIT` functions the table starts
    over (and workers are told to forget theirs): that only re-sends."""

    def __init__(self) -> None:
        self._ids: dict[bytes, int] = {}
        self._next = 0

    def get(self, fn_blob: bytes) -> int:
        fn_id = self._ids.get(fn_blob)
        if fn_id is None:
            if len(self._ids) >= FN_LIMIT:
                self._ids.clear()
            self._next += 1
            # Plain bytes: the table must not keep a blob's large globals alive.
            fn_id = self._ids[bytes(fn_blob)] = self._next
        return fn_id
