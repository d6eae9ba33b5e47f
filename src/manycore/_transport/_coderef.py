"""Functions and modules that travel by reference, at the parent's version.

A function of an importable module is pickled as its module and name, a module
as its name; both with the number of times the parent has seen the module
reloaded. A worker resolves the name in its own import of the module; when that
import is older than the parent's (the parent ran ``importlib.reload``, or
IPython's autoreload did), the worker reloads the module once, so that the new
code runs, as it does on threads.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types

__all__ = [
    "by_reference_as",
    "current_function",
    "current_module",
    "generation",
    "global_names",
    "importable_module",
]


def by_reference_as(fn: types.FunctionType) -> tuple[str, str] | None:
    """``(module, qualname)`` of a function its module gives back by that name."""
    name = fn.__module__
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is None or name == "__main__" or "<locals>" in fn.__qualname__:
        return None
    if _registered_by_value(name):
        return None
    found: object = module
    try:
        for part in fn.__qualname__.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    return (name, fn.__qualname__) if found is fn else None


# id of a code object -> (it, the global names it and the code nested in it read).
# A by-value function's names are read on every call sent (its fingerprint, its
# large globals), and code never changes: they are worked out once. The code is
# held, so its id is not reused while it is in the table; a bounded table.
_names: dict[int, tuple[types.CodeType, tuple[str, ...]]] = {}
_NAMES_KEPT = 1024


def global_names(code: types.CodeType) -> tuple[str, ...]:
    """The names ``code`` and the code nested in it (comprehensions, inner
    functions) look up, sorted: the globals a function may read."""
    hit = _names.get(id(code))
    if hit is not None and hit[0] is code:
        return hit[1]
    names = tuple(sorted(_all_names(code)))
    if len(_names) >= _NAMES_KEPT:
        _names.clear()
    _names[id(code)] = (code, names)
    return names


def _all_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _all_names(const)
    return names


def _registered_by_value(module_name: str) -> bool:
    """Whether the user asked cloudpickle to pickle this module's functions by
    value (``cloudpickle.register_pickle_by_value``)."""
    import cloudpickle  # (not at the top: workers import this module, see _pickling)

    registered = getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", ())
    return any(module_name == m or module_name.startswith(m + ".") for m in registered)


# module name -> (its __spec__ when last seen here, reloads seen since). A reload
# makes a new spec. A forked worker inherits the table: it tells which version of
# each module the worker's inherited copy is.
_seen: dict[str, tuple[object, int]] = {}
_seen_lock = threading.Lock()


def generation(module: types.ModuleType) -> int:
    """How many reloads of ``module`` this process has seen (0 at first sight)."""
    spec = getattr(module, "__spec__", None)
    name = module.__name__
    with _seen_lock:
        entry = _seen.get(name)
        if entry is None or entry[0] is not spec:
            entry = _seen[name] = (spec, 0 if entry is None else entry[1] + 1)
    return entry[1]


def importable_module(module: types.ModuleType) -> bool:
    """Whether a worker can import ``module`` by its name (it is this process's)."""
    name = module.__name__
    return name != "__main__" and sys.modules.get(name) is module and not _registered_by_value(name)


# In a worker: module name -> the generation of the parent's it is up to date with.
_synced: dict[str, int] = {}


def current_module(name: str, gen: int) -> types.ModuleType:
    """In the worker: module ``name``, as the parent's generation ``gen`` of it.

    A module the parent reloaded since this worker imported it (``importlib.reload``,
    IPython's autoreload) is reloaded here once, so that its new code and module
    globals are what the worker runs, as threads would.
    """
    module = sys.modules.get(name)
    if module is None:
        module = importlib.import_module(name)
        _synced[name] = gen
        return module
    have = _synced.get(name)
    if have is None:  # imported otherwise: inherited through fork, or fresh
        entry = _seen.get(name)
        have = entry[1] if entry is not None and entry[0] is module.__spec__ else gen
    if have < gen:
        try:
            module = importlib.reload(module)
        except Exception:  # cannot reload here: run the code this worker has
            pass
    _synced[name] = max(have, gen)
    return module


def current_function(module_name: str, qualname: str, gen: int) -> object:
    """In the worker: the function ``module.qualname``, from an up-to-date module."""
    try:
        obj: object = current_module(module_name, gen)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # named: the bare cause says nothing of which function
        raise ImportError(
            f"cannot find the function {module_name}.{qualname} in the worker process: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return obj
