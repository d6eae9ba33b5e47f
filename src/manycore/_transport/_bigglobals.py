"""Large globals of a script's functions: pickled once, sent once to each worker.

A function defined in a script or a notebook travels by value, with the globals
it reads. A large one (a 100 MB array a cell loaded) would be pickled and sent
again with every call. Instead, each large global becomes a :class:`Shipment`,
pickled once (its big buffers left out of the pickle, to be written to the pipe
straight from the object's memory) and kept while the same object is bound to
the name. The function's pickle names the shipment (a persistent id); the
process engine sends a worker each shipment it has not had before the function
itself, and the worker keeps the latest value of each global.

What a worker sees: the object bound to the name when the function was pickled.
Rebinding the name (``DATA = load()``) makes a new shipment; a change made in
place to a large global (``DATA[0] = 1``) after it was first sent reaches no
worker that already has it. Small globals travel with each call, as before.
"""

from __future__ import annotations

import itertools
import pickle
import sys
import types
import weakref

from manycore._core import SerializationError
from manycore._transport._coderef import by_reference_as, global_names

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TypeAlias

    # What names a shipment on the wire: (None, key, gid, pickle size or -1, buffer sizes).
    Head: TypeAlias = tuple[None, str, int, int, list[int]]

__all__ = [
    "BIG",
    "FnBlob",
    "Shipment",
    "big_globals",
    "global_value",
    "pinned",
    "receive",
    "unpicklable_global",
    "with_shipments",
]

BIG = 1 << 20  # a global at least this big (by a cheap estimate) is shipped once
PID = "manycore:global"
_CONTAINERS = (list, tuple, dict, set, frozenset)
_gids = itertools.count(1)


class Shipment:
    """One large global's value, pickled once: ``data`` (None for ``bytes``, sent
    raw) and the big ``buffers`` it refers to (views of the object itself).

    The value is held weakly where it can be (an array, most objects): a global
    the user deleted or rebound must be freed, not kept by a cached pickle. What
    is in flight holds it through its :class:`FnBlob`'s ``pins``."""

    def __init__(self, key: str, name: str, value: object, protocol: int):
        self.key = key  # the global's namespace and name: a worker keeps one value per key
        self.gid = next(_gids)  # this value of it
        self.protocol = protocol
        self.buffers: list[memoryview] = []
        self._views = 0  # buffers to take again from the value when it is sent
        if type(value) is bytes:
            self.data: bytes | None = None
            self.buffers.append(memoryview(value))
        else:
            try:
                self.data = _pickle(value, self.buffers, protocol)
            except Exception as exc:
                raise unpicklable(name, value, exc) from exc
        try:  # (while it lives, its id names no other object)
            self._ref: Callable[[], object] = weakref.ref(value)
        except TypeError:
            self._ref = lambda: value  # bytes, a list...: held
            return
        self._views = len(self.buffers)  # views of it would hold it
        self.buffers = []

    @property
    def value(self) -> object:
        """The value, or None once it is gone (a weakly held one)."""
        return self._ref()

    def frame_parts(self) -> tuple[Head, list[bytes | memoryview]]:
        """What the engine writes: a head naming this shipment, and the bytes."""
        data, buffers = self.data, self.buffers
        if self._views:
            value = self.value  # alive: the blob being sent pins it (see pinned)
            buffers = []
            if value is None:  # (not pinned: a bug) the function fails to load, saying so
                data = pickle.dumps(_Freed(self.key), protocol=self.protocol)
            else:
                data = _pickle(value, buffers, self.protocol)
        size = -1 if data is None else len(data)
        head: Head = (None, self.key, self.gid, size, [b.nbytes for b in buffers])
        parts: list[bytes | memoryview] = [] if data is None else [data]
        return head, parts + buffers


class _Freed:
    """Stands for a value freed before it was sent: unpickling it raises."""

    def __init__(self, key: str):
        self.key = key

    def __reduce__(self) -> tuple[object, ...]:
        return (_freed, (self.key,))


def _freed(key: str) -> object:
    raise pickle.UnpicklingError(f"the global {key!r} was freed before it was sent")


def _pickle(value: object, buffers: list[memoryview], protocol: int) -> bytes:
    if isinstance(value, bytearray):  # a view of it would stop the user resizing it
        return pickle.dumps(value, protocol)

    def keep(buf: pickle.PickleBuffer) -> bool:
        try:
            view = buf.raw()
        except BufferError:  # not contiguous: in the pickle
            return True
        buffers.append(view)
        return False

    try:
        data = pickle.dumps(value, protocol, buffer_callback=keep)
        if b"__main__" not in data:
            return data
    except Exception:
        pass
    import cloudpickle  # (not at the top: workers import this module, see _pickling)

    buffers.clear()  # a script's class: cloudpickle sends it by value
    return cloudpickle.dumps(value, protocol, buffer_callback=keep)  # type: ignore[no-any-return]


class FnBlob(bytes):
    """A pickled function that names shipments: the bytes, plus the shipments (for
    the engine) and, while it is in flight, their values (``pins``). It pickles
    as plain bytes."""

    shipments: tuple[Shipment, ...] = ()
    pins: tuple[object, ...] = ()

    def __reduce__(self) -> tuple[object, ...]:
        return (bytes, (bytes(self),))


def with_shipments(data: bytes, shipments: Iterable[Shipment] | bytes) -> bytes:
    """``data`` with ``shipments`` attached: a list of them, or the blob ``data``
    wraps (whose shipments it needs too); not pinned (see :func:`pinned`)."""
    if isinstance(shipments, bytes):
        shipments = getattr(shipments, "shipments", ())
    attached = tuple(shipments)
    if not attached:
        return data
    blob = FnBlob(data)
    blob.shipments = attached
    return blob


def pinned(blob: bytes) -> bytes | None:
    """A copy of ``blob`` that holds its shipments' values, to be sent (what a
    cache keeps must not hold them); None if one is gone (pickle it again)."""
    shipments: tuple[Shipment, ...] = getattr(blob, "shipments", ())
    if not shipments:
        return blob
    pins = tuple(s.value for s in shipments)
    if any(p is None for p in pins):
        return None
    copy = FnBlob(blob)
    copy.shipments, copy.pins = shipments, pins
    return copy


# ------------------------------------------------------------ the parent side

# The shipment of each (globals dict, name) while some pickle still refers to it.
_shipments: weakref.WeakValueDictionary[tuple[int, str], Shipment] = weakref.WeakValueDictionary()


def size_hint(value: Any) -> int:  # (duck-typed: anything with .nbytes)
    """A cheap estimate of ``value``'s size in bytes (0 when unknown)."""
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, _CONTAINERS):
        return sys.getsizeof(value)  # its slots alone: a long list is big
    if isinstance(value, (type, types.ModuleType, types.FunctionType)):
        return 0
    nbytes = getattr(type(value), "nbytes", None)  # NumPy, pandas, memoryview...
    if nbytes is None:
        return 0
    try:
        size = value.nbytes
    except Exception:
        return 0
    return size if isinstance(size, int) else 0


def big_globals(fn: object, protocol: int) -> dict[int, Shipment]:
    """The shipments for the large globals that ``fn`` (a by-value function) and
    the script functions it calls read, by the id of their value."""
    found: dict[int, Shipment] = {}
    for globals_, name, value in _globals_read(fn):
        if size_hint(value) < BIG:
            continue
        where = (id(globals_), name)
        shipment = _shipments.get(where)
        if shipment is None or shipment.value is not value:
            key = f"{globals_.get('__name__')}@{id(globals_):x}.{name}"
            shipment = _shipments[where] = Shipment(key, name, value, protocol)
        found[id(value)] = shipment
    return found


def _globals_read(fn: object) -> list[tuple[dict[str, object], str, object]]:
    """(globals dict, name, value) of each global that ``fn`` and the by-value
    functions it reads (a script's helpers) use."""
    out: list[tuple[dict[str, object], str, object]] = []
    todo: list[object] = [fn]
    seen: set[int] = set()
    while todo and len(seen) < 64:
        f = todo.pop()
        if id(f) in seen or not isinstance(f, types.FunctionType) or by_reference_as(f):
            continue
        seen.add(id(f))
        where = f.__globals__
        for name in global_names(f.__code__):
            if name in where:
                value = where[name]
                out.append((where, name, value))
                todo.append(value)
        if f.__closure__:
            todo.extend(cell.cell_contents for cell in f.__closure__ if _filled(cell))
    return out


def _filled(cell: types.CellType) -> bool:
    try:
        return cell.cell_contents is not _filled  # (read it: an empty cell raises)
    except ValueError:
        return False


def unpicklable(name: str, value: object, exc: BaseException) -> SerializationError:
    return SerializationError(
        f"cannot pickle the global {name!r} (of type {type(value).__name__!r}) that the "
        f"function uses, to send it to a worker process: {exc}. Pass it as an argument, "
        "create it inside the function (or in the pool's init=), or use backend='threads'."
    )


def unpicklable_global(fn: object) -> SerializationError | None:
    """The error naming the first global of ``fn`` that cannot be pickled, if any."""
    import cloudpickle

    for _, name, value in _globals_read(fn):
        if isinstance(value, (types.FunctionType, types.ModuleType)):
            continue  # a helper is checked through its own globals
        try:
            cloudpickle.dumps(value)
        except BaseException as exc:
            return unpicklable(name, value, exc)
    return None


# ------------------------------------------------------------ the worker side

_received: dict[str, tuple[int, object]] = {}  # key -> (gid, value), the latest of each


def receive(head: Head, body: memoryview) -> None:
    """Keep a shipment that arrived (``head`` as :meth:`Shipment.frame_parts` made it)."""
    _, key, gid, size, sizes = head
    if body.readonly:  # the frame was read into bytes: the value must be writable, as pickled
        body = memoryview(bytearray(body))
    at = 0 if size < 0 else size
    buffers = []
    for n in sizes:
        buffers.append(body[at : at + n])
        at += n
    try:
        value = bytes(buffers[0]) if size < 0 else pickle.loads(body[:size], buffers=buffers)
    except Exception as exc:  # the function that names it fails to load, saying why
        value = _Failed(exc)
    _received[key] = (gid, value)


class _Failed:
    def __init__(self, exc: Exception):
        self.exc = exc


def global_value(key: str, gid: int) -> object:
    """A shipment's value, for the unpickler of a function that names it."""
    got = _received.get(key)
    if got is None or got[0] != gid:
        raise pickle.UnpicklingError(f"the global {key!r} (shipment {gid}) did not arrive")
    if isinstance(got[1], _Failed):
        raise pickle.UnpicklingError(
            f"the global {key!r} could not be unpickled in the worker: {got[1].exc!r}"
        )
    return got[1]
