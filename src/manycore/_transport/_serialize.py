"""Pickling for the process engine.

Plain ``pickle`` (protocol 5) is the fast path. ``cloudpickle`` is used for the
function of a task (lambdas, closures, functions typed into ``__main__``, a notebook
or IPython) and for any payload that plain pickle cannot handle or that refers to
``__main__`` by name: workers never re-import the user's main script, so such a
reference could not be resolved there, and cloudpickle sends it by value instead.

Functions from ``__main__`` travel by value, and cloudpickle gives each pickling its
own globals dict, so a global set by one (an ``init`` that loads a model) would be
invisible to another (the task). Functions are therefore pickled with a persistent
id in place of that dict, and a worker resolves it to its own ``__main__`` namespace:
every such function shares it, and the parent's current values of the globals a
function uses are written into it when the function arrives.
"""

from __future__ import annotations

import io
import linecache
import os
import pickle
import sys
import types
import weakref
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence

import cloudpickle

from manycore._core import Batch, SerializationError
from manycore._transport import _coderef
from manycore._transport._bigglobals import PID as BIG_PID
from manycore._transport._bigglobals import (
    Shipment,
    big_globals,
    pinned,
    unpicklable_global,
)
from manycore._transport._bigglobals import with_shipments as with_shipments
from manycore._transport._coderef import (
    by_reference_as,
    current_function,
    current_module,
    generation,
    global_names,
    importable_module,
)
from manycore._transport._pickling import (
    MAIN_GLOBALS,
    PROTOCOL,
    code_with_source,
    ctrl_c,
    dumps,
    loads,
    loads_code,
    why,
)

__all__ = [
    "ctrl_c",
    "describe_batch",
    "describe_unpicklable",
    "dumps",
    "dumps_code",
    "dumps_code_with",
    "dumps_fn",
    "loads",
    "loads_code",
    "why",
    "with_shipments",
]


# A function pickled by reference, with its module's __spec__ then: a reload makes
# a new one, and the pickle names the module's version (see _coderef).
_fn_cache: weakref.WeakKeyDictionary[object, tuple[object, bytes]] = weakref.WeakKeyDictionary()
_value_cache: weakref.WeakKeyDictionary[object, tuple[tuple[object, ...], bytes]] = (
    weakref.WeakKeyDictionary()
)


_CLOUD_REDUCE_CODE = cloudpickle.Pickler.dispatch_table[types.CodeType]
_DYNAMIC_FILE = "<dynamic-code>"


def _reduce_code(code: types.CodeType) -> tuple[object, ...]:
    """cloudpickle's reduction of a code object, with the real file name back.

    cloudpickle 3 writes ``<dynamic-code>`` in place of ``co_filename`` (so that
    pickles do not depend on where a function was defined); a worker's traceback
    would then show neither the file nor the line's source. Source that no file
    holds (an IPython cell, which IPython keeps in ``linecache``) travels along, so
    that the worker's traceback can show its lines too.
    """
    ctor, args = _CLOUD_REDUCE_CODE(code)
    filename = code.co_filename
    if filename != _DYNAMIC_FILE and _DYNAMIC_FILE in args:
        at = args.index(_DYNAMIC_FILE)  # co_filename comes before co_name
        args = (*args[:at], filename, *args[at + 1 :])
    lines = _unfiled_source(filename)
    if lines is None:
        return (ctor, args)
    return (code_with_source, (ctor, args, filename, lines))


def _unfiled_source(filename: str) -> tuple[int, None, list[str], str] | None:
    """The ``linecache`` entry of source that is in no file (an IPython cell)."""
    entry = linecache.cache.get(filename)
    if entry is None or len(entry) != 4 or os.path.exists(filename):
        return None
    size, _, lines, fullname = entry
    return (size, None, lines, fullname)


_OWN = frozenset({__name__, _coderef.__name__})
# The keys cloudpickle copies into the fresh globals dict of a by-value function.
_BASE_KEYS = frozenset({"__package__", "__name__", "__path__", "__file__"})


class _FunctionPickler(cloudpickle.Pickler):  # type: ignore[misc]
    # Code objects keep their file name (see _reduce_code); the rest as cloudpickle does.
    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)

    def __init__(self, file: object, protocol: int, big: dict[int, Shipment] | None = None):
        super().__init__(file, protocol)
        self._big = big or {}

    def persistent_id(self, obj: object) -> object:
        if type(obj) is dict and obj.get("__name__") == "__main__" and obj.keys() <= _BASE_KEYS:
            return MAIN_GLOBALS
        if self._big:
            shipment = self._big.get(id(obj))
            if shipment is not None and shipment.value is obj is not None:
                return (BIG_PID, shipment.key, shipment.gid)
        return None

    def reducer_override(self, obj: object) -> object:
        if type(obj) is types.MethodType:
            by_name = _method_by_name(obj)
            if by_name is not None:
                return by_name
        elif type(obj) is types.FunctionType and obj.__module__ not in _OWN:
            # (Our own rebuilders, named in the reductions, go by name only.)
            where = by_reference_as(obj)
            if where is not None:
                gen = generation(sys.modules[where[0]])
                return (current_function, (*where, gen))
        elif type(obj) is types.ModuleType and importable_module(obj):
            return (current_module, (obj.__name__, generation(obj)))
        return super().reducer_override(obj)


def _method_by_name(method: types.MethodType) -> tuple[object, ...] | None:
    """A bound method (a classmethod too) as ``getattr(its object, its name)``, as
    plain pickle does. cloudpickle pickles a classmethod's function by value, and
    that copy runs against a copy of its module's globals: a global that ``init``
    set in the worker would not be seen, and its traceback would name no file."""
    owner = method.__self__
    name = method.__func__.__name__
    try:
        same = getattr(owner, name, None) == method
    except Exception:  # an owner whose attribute lookup or __eq__ fails
        return None
    return (getattr, (owner, name)) if same else None


def _module_spec(fn: object) -> object:
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    return getattr(module, "__spec__", None)


def dumps_code(obj: object, big: dict[int, Shipment] | None = None) -> bytes:
    """Pickle functions (and what goes with them) so that ``__main__`` ones share
    globals; the values in ``big`` (by id) are named, not pickled (see _bigglobals)."""
    buf = io.BytesIO()
    _FunctionPickler(buf, PROTOCOL, big).dump(obj)
    return buf.getvalue()


def dumps_fn(fn: Callable[..., object]) -> bytes:
    """Pickle a task's function, by value where it is not importable.

    A function pickled *by reference* (an importable module function) is cached.
    One pickled by value carries its globals and closure as they are now, and those
    may change between calls (a notebook cell re-run, a loop variable): its pickle
    is reused only while a fingerprint of everything it depends on is unchanged,
    and only when all of that is immutable (see :func:`_fingerprint`).
    """
    try:
        cached = _fn_cache.get(fn)
        by_value = _value_cache.get(fn)
    except TypeError:  # not weak-referenceable or not hashable
        cached = by_value = None
    if cached is not None and cached[0] is _module_spec(fn):
        return cached[1]
    big = big_globals(fn, PROTOCOL)
    alive = [s.value for s in big.values()]  # (until pinned: a rebinding thread may drop them)
    _keep_shipments(fn, big)
    fingerprint = _fingerprint(fn, (), big)
    if by_value is not None and fingerprint is not None and by_value[0] == fingerprint:
        blob = pinned(by_value[1])
        if blob is not None:
            return blob
    try:
        data = with_shipments(dumps_code(fn, big), big.values())
    except BaseException as exc:  # the user's __reduce__ ran: even SystemExit
        if ctrl_c(exc, lambda: dumps_code(fn, big)):
            raise
        raise _unpicklable_fn(fn, exc) from exc
    try:
        if by_reference(fn):
            _fn_cache[fn] = (_module_spec(fn), data)
        elif fingerprint is not None:
            _value_cache[fn] = (fingerprint, data)
        elif by_value is not None:  # stale: it must not keep an old large global alive
            del _value_cache[fn]
    except TypeError:
        pass
    blob = pinned(data)
    del alive
    return data if blob is None else blob


# The large globals' shipments each by-value function sent last, whether or not
# its pickle could be cached (a mutable small global beside them): the next call
# then names the same shipments, which workers have, rather than new ones.
_last_shipments: weakref.WeakKeyDictionary[object, tuple[Shipment, ...]] = (
    weakref.WeakKeyDictionary()
)


def _keep_shipments(fn: object, big: dict[int, Shipment]) -> None:
    try:
        if big:
            _last_shipments[fn] = tuple(big.values())
        else:
            _last_shipments.pop(fn, None)
    except TypeError:  # not weak-referenceable
        pass


_ATOMS = (type(None), bool, int, float, complex, str, bytes, range, types.BuiltinFunctionType)


def _unpicklable_fn(fn: object, exc: BaseException) -> SerializationError:
    err = unpicklable_global(fn)
    if err is not None:
        return err
    return SerializationError(
        f"cannot pickle the function {_name(fn)} of type {type(fn).__name__!r} "
        f"to send it to a worker process: {why(exc)}. Use backend='threads', or make "
        "the function a plain module-level function."
    )


def _fingerprint(
    fn: object, chain: tuple[int, ...] = (), big: dict[int, Shipment] | None = None
) -> tuple[object, ...] | None:
    """What a by-value function's pickle depends on, as comparable values; None
    when something it depends on is mutable (a list, a dict, an instance), since
    a change inside it would not show here and a cached pickle would be stale."""
    if not isinstance(fn, types.FunctionType) or len(chain) > 4:
        return None
    if id(fn) in chain:  # recursion: the function is being fingerprinted already
        return ("recursive", fn.__qualname__)
    chain = (*chain, id(fn))
    parts: list[object] = [id(fn.__code__), fn.__qualname__]
    for value in (
        *(fn.__defaults__ or ()),
        *sorted((fn.__kwdefaults__ or {}).items()),
        *(cell.cell_contents for cell in (fn.__closure__ or ())),
    ):
        key = _value_key(value, chain, big)
        if key is None:
            return None
        parts.append(key)
    for name in global_names(fn.__code__):
        if name in fn.__globals__:
            key = _value_key(fn.__globals__[name], chain, big)
            if key is None:
                return None
            parts.append((name, key))
    return tuple(parts)


def _value_key(value: object, chain: tuple[int, ...], big: dict[int, Shipment] | None) -> object:
    """A comparable stand-in for an immutable value; None if it may change inside.
    A large global stands for itself: its shipment, made once."""
    shipment = big.get(id(value)) if big else None
    if shipment is not None and shipment.value is value:
        return ("big", shipment.gid)
    if isinstance(value, _ATOMS):
        return (type(value), value)
    if isinstance(value, (tuple, frozenset)):
        keys = [_value_key(v, chain, big) for v in value]
        return None if any(k is None for k in keys) else (type(value), tuple(keys))
    if isinstance(value, types.ModuleType):  # by reference: its name and version
        return ("module", value.__name__, generation(value))
    if isinstance(value, type) and value.__module__ != "__main__":
        return ("class", value.__module__, value.__qualname__)
    if isinstance(value, types.FunctionType):
        return _fingerprint(value, chain, big)
    return None


def by_reference(fn: object) -> bool:
    try:
        return b"__main__" not in pickle.dumps(fn, PROTOCOL)
    except Exception:
        return False


def describe_unpicklable(
    args: Sequence[object], kwargs: Mapping[str, object] | None, what: str
) -> SerializationError | None:
    """Find the first argument that cannot be pickled and say which it is."""
    named: list[tuple[str, object]] = [(f"{what} {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in (kwargs or {}).items()]
    return _first_unpicklable(named)


def _first_unpicklable(named: list[tuple[str, object]]) -> SerializationError | None:
    for label, value in named:
        try:
            dumps(value)
        except BaseException as exc:  # the user's __reduce__ ran: even SystemExit
            err = SerializationError(
                f"cannot pickle {label} of type {type(value).__name__!r} to send it to "
                f"a worker process: {why(exc)}. Pass something picklable, create the "
                "object inside the task, or use backend='threads'."
            )
            err.__cause__ = exc
            return err
    return None


def describe_batch(batch: Batch) -> SerializationError | None:
    """The error for a batch whose arguments did not pickle: which one, of what
    type; None if each pickles alone (what failed did not happen again)."""
    err: SerializationError | None
    if batch.submit:
        err = describe_unpicklable(batch.items[0], batch.kwargs, "argument")
    else:
        err = None
        for offset, item in enumerate(batch.items):
            label = f"input item {batch.start + offset}"
            if batch.star and isinstance(item, (tuple, list)):
                named = [(f"argument {i} of {label}", a) for i, a in enumerate(item)]
            else:
                named = [(label, item)]
            err = _first_unpicklable(named)
            if err is not None:
                break
    return err


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def dumps_code_with(obj: object, reducers: dict[type, object]) -> bytes:
    """:func:`dumps_code` with ``reducers`` (by type) before copyreg's: for what a
    worker is given as it starts (see :mod:`manycore._engine._inherit`)."""
    from collections import ChainMap

    class Pickler(_FunctionPickler):
        dispatch_table = ChainMap(reducers, _FunctionPickler.dispatch_table)

    buf = io.BytesIO()
    Pickler(buf, PROTOCOL).dump(obj)
    return buf.getvalue()
