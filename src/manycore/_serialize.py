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
import pickle
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

from ._batch import Batch
from ._errors import SerializationError

__all__ = [
    "describe_batch",
    "describe_unpicklable",
    "dumps",
    "dumps_code",
    "dumps_fn",
    "loads",
    "loads_code",
]

PROTOCOL = 5
loads = pickle.loads

_fn_cache: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def dumps(obj: Any) -> bytes:
    """Pickle ``obj``; fall back to cloudpickle where plain pickle cannot serve."""
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except Exception:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    # A reference to __main__ would not resolve in a worker (it does not run the
    # user's script), so send such objects by value. A string that merely contains
    # the word costs one extra pickling, nothing more.
    if b"__main__" in data:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    return data


_MAIN_GLOBALS = "manycore:__main__.__dict__"
# The keys cloudpickle copies into the fresh globals dict of a by-value function.
_BASE_KEYS = frozenset({"__package__", "__name__", "__path__", "__file__"})


class _FunctionPickler(cloudpickle.Pickler):  # type: ignore[misc]
    def persistent_id(self, obj: Any) -> str | None:
        if type(obj) is dict and obj.get("__name__") == "__main__" and obj.keys() <= _BASE_KEYS:
            return _MAIN_GLOBALS
        return None


class _FunctionUnpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        if pid == _MAIN_GLOBALS:
            import __main__

            return __main__.__dict__
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


def dumps_code(obj: Any) -> bytes:
    """Pickle functions (and what goes with them) so that ``__main__`` ones share globals."""
    buf = io.BytesIO()
    _FunctionPickler(buf, PROTOCOL).dump(obj)
    return buf.getvalue()


def loads_code(data: bytes | memoryview) -> Any:
    """The worker-side counterpart of :func:`dumps_code`."""
    return _FunctionUnpickler(io.BytesIO(data)).load()


def dumps_fn(fn: Callable[..., Any]) -> bytes:
    """Pickle a task's function, by value where it is not importable.

    Only a function pickled *by reference* (an importable module function) is
    cached: one pickled by value carries its globals and closure as they are now,
    and those may change between calls (a notebook cell re-run, a loop variable).
    """
    try:
        cached = _fn_cache.get(fn)
    except TypeError:  # not weak-referenceable or not hashable
        cached = None
    if cached is not None:
        return cached
    try:
        data = dumps_code(fn)
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle the function {_name(fn)} of type {type(fn).__name__!r} "
            f"to send it to a worker process: {exc}. Use backend='threads', or make "
            "the function a plain module-level function."
        ) from exc
    if _by_reference(fn):
        try:
            _fn_cache[fn] = data
        except TypeError:
            pass
    return data


def _by_reference(fn: Any) -> bool:
    try:
        return b"__main__" not in pickle.dumps(fn, PROTOCOL)
    except Exception:
        return False


def describe_unpicklable(
    args: Sequence[Any], kwargs: dict[str, Any] | None, what: str
) -> SerializationError | None:
    """Find the first argument that cannot be pickled and say which it is."""
    named: list[tuple[str, Any]] = [(f"{what} {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in (kwargs or {}).items()]
    for label, value in named:
        try:
            dumps(value)
        except Exception as exc:
            return SerializationError(
                f"cannot pickle {label} of type {type(value).__name__!r} to send it to "
                f"a worker process: {exc}. Pass something picklable, create the "
                "object inside the task, or use backend='threads'."
            )
    return None


def describe_batch(batch: Batch) -> SerializationError:
    """The error for a batch whose arguments did not pickle: which one, of what type."""
    err: SerializationError | None
    if batch.submit:
        err = describe_unpicklable(batch.items[0], batch.kwargs, "argument")
    else:
        err = None
        for offset, item in enumerate(batch.items):
            err = describe_unpicklable([item], None, f"input item {batch.start + offset}:")
            if err is not None:
                break
    return err or SerializationError("cannot pickle the task's arguments")


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
