"""``mc.shared_array``: NumPy arrays in shared memory, seen by every worker without
a copy.

A shared array pickles as the name of its segment and its place in it, so passing
one (or a slice of one) to a task costs a few dozen bytes, and a worker that writes
into it writes into the parent's array: the "fill a big output in parallel" pattern.
The segment is removed when the last array using it in the creating process goes
away. A worker that creates one and returns it hands it over: the parent then owns
the segment.
"""

from __future__ import annotations

import os
import weakref

from manycore._core import public
from manycore._transport import _shm

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from typing import Any, SupportsIndex

    # A NumPy ndarray: NumPy is optional, so it is not typed here.
    Array = Any

__all__ = ["shared_array"]

# Segments this process can rebuild arrays from, by name: the ones it owns and the
# ones it has attached. Weak: a segment lives as long as an array uses it.
_segments: weakref.WeakValueDictionary[str, _shm.Segment] = weakref.WeakValueDictionary()
_class: type | None = None


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ImportError("mc.shared_array needs NumPy: pip install numpy") from None
    return numpy


def _array_class() -> type:
    """The ndarray subclass, made on first use (NumPy is optional)."""
    global _class
    if _class is not None:
        return _class
    np = _numpy()

    class SharedArray(np.ndarray):  # type: ignore[misc,name-defined]
        """An ndarray whose memory is a shared-memory segment."""

        _segment: _shm.Segment | None = None

        def __array_finalize__(self, obj: object) -> None:
            # Views (slices, reshapes) keep the segment alive; a new array made
            # by arithmetic carries it too but does not live in it (see below).
            self._segment = getattr(obj, "_segment", None)

        def __reduce_ex__(self, protocol: SupportsIndex) -> Any:  # (NumPy's, for a copy)
            place = _place(self)
            if place is None:  # not in the segment (a computed array): a plain copy
                return np.asarray(self).__reduce_ex__(protocol)
            seg = self._segment
            handed = False
            if IN_WORKER and seg is not None and (seg.owner or seg.name in _handed):
                _hand_over(seg)  # made here, going to the parent: it owns it now
                handed = True
            return (_rebuild, (*place, handed))

    SharedArray.__module__ = "manycore"
    SharedArray.__qualname__ = "SharedArray"
    _class = SharedArray
    return SharedArray


IN_WORKER = False  # set in worker processes
_finalizers: dict[str, weakref.finalize[[str, int], _shm.Segment]] = {}


_handed: set[str] = set()  # (in a worker) segments given to the parent


def _hand_over(seg: _shm.Segment) -> None:
    """A worker stops owning a segment it returns: the parent takes it over."""
    finalizer = _finalizers.pop(seg.name, None)
    if finalizer is not None:
        finalizer.detach()
    seg.owner = False
    _handed.add(seg.name)


def _place(arr: Array) -> tuple[str, int, object, object, object] | None:
    """(segment name, byte offset, shape, dtype, strides) if ``arr`` lives in its
    segment; None otherwise."""
    seg = arr._segment  # noqa: SLF001 - our own array class, made in _wrap below
    if seg is None:
        return None
    base = _address(seg)
    start = arr.__array_interface__["data"][0]
    if not base <= start < base + max(seg.size, 1):
        return None
    return (seg.name, start - base, arr.shape, arr.dtype, arr.strides)


def _address(seg: _shm.Segment) -> int:
    np = _numpy()
    return int(np.frombuffer(seg.map, dtype=np.uint8, count=1).__array_interface__["data"][0])


def _wrap(
    seg: _shm.Segment, shape: object, dtype: object, offset: int = 0, strides: object = None
) -> Array:
    np = _numpy()
    arr = np.ndarray(shape, dtype, buffer=seg.map, offset=offset, strides=strides)
    arr = arr.view(_array_class())
    arr._segment = seg  # noqa: SLF001 - our own array class
    return arr


def _rebuild(
    name: str, offset: int, shape: object, dtype: object, strides: object, handed: bool = False
) -> Array:
    seg = _segments.get(name)
    if seg is None:
        seg = _shm.Segment.attach(name)
        if handed and not IN_WORKER:
            # A worker made it and returned it: from now on this process owns it,
            # under a name of its own (a dead worker's names are swept away).
            seg.name = _shm.rename(name)
            seg.owner = True
            _own(seg)
            _segments[name] = seg  # the same array may arrive again under the old name
        _segments[seg.name] = seg
    return _wrap(seg, shape, dtype, offset, strides)


def _own(seg: _shm.Segment) -> None:
    """Remove the segment's name when its last array here is gone."""
    _finalizers[seg.name] = weakref.finalize(seg, _forget, seg.name, os.getpid())


def _forget(name: str, owner: int) -> None:
    if os.getpid() != owner:  # a forked child collecting an inherited array
        return
    _finalizers.pop(name, None)
    _shm.unlink_name(name)


@public
def shared_array(shape_or_array: Any, dtype: object = float) -> Array:  # (a shape: duck-typed)
    """A NumPy array in shared memory: ``shared_array((rows, cols), dtype)``
    (zero-filled) or ``shared_array(existing_array)`` (a copy of it).

    Pass it, or slices of it, to tasks on the processes backend: workers map the
    same memory, so they read it without a copy and their writes are seen here.
    Workers writing disjoint slices need no lock. The memory is released when the
    last array using it here is garbage-collected.
    """
    np = _numpy()
    source = None
    if isinstance(shape_or_array, np.ndarray):
        source = shape_or_array
        shape, dtype = source.shape, source.dtype
    else:
        shape = shape_or_array
    try:
        dt = np.dtype(dtype)
        shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise TypeError(
            "shared_array needs a shape (an int or a tuple of ints) and a dtype, or an "
            f"existing NumPy array; got {shape_or_array!r:.80} and dtype={dtype!r:.40}"
        ) from None
    if any(n < 0 for n in shape):
        raise ValueError(f"shared_array: shape must not be negative, got {shape}")
    if dt.hasobject:
        raise TypeError("shared_array cannot hold Python objects (dtype=object)")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    try:
        seg = _shm.Segment.create(nbytes)
    except OSError as exc:
        raise MemoryError(
            f"no room in shared memory (/dev/shm) for a shared_array of {nbytes:,} bytes: "
            f"{exc}. In a container, give it more (docker run --shm-size=...)."
        ) from exc
    _own(seg)
    _segments[seg.name] = seg
    arr = _wrap(seg, shape, dt)
    if source is not None:
        arr[...] = source
    return arr
