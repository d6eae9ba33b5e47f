"""Functions that travel by reference, checked against the parent's code.

A function of an importable module is pickled as its module and name, with a
digest of the parent's code. A worker resolves the name in its own import of the
module; when that import is older than the parent's (the parent ran
``importlib.reload``, or IPython's autoreload patched the function), the digests
differ and the worker reloads the module once, so the new code runs, as it does
on threads.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
import weakref
from typing import Any

import cloudpickle

__all__ = ["by_reference_as", "code_digest", "current_function"]


def by_reference_as(fn: types.FunctionType) -> tuple[str, str] | None:
    """``(module, qualname)`` of a function its module gives back by that name."""
    name = fn.__module__
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is None or name == "__main__" or "<locals>" in fn.__qualname__:
        return None
    if _registered_by_value(name):
        return None
    found: Any = module
    try:
        for part in fn.__qualname__.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    return (name, fn.__qualname__) if found is fn else None


def _registered_by_value(module_name: str) -> bool:
    """Whether the user asked cloudpickle to pickle this module's functions by
    value (``cloudpickle.register_pickle_by_value``)."""
    registered = getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", ())
    return any(module_name == m or module_name.startswith(m + ".") for m in registered)


_digests: weakref.WeakKeyDictionary[types.CodeType, str] = weakref.WeakKeyDictionary()


def code_digest(code: types.CodeType) -> str:
    """A digest of what a code object does (bytecode, names, constants, nested
    code, first line): the same in every process for the same source."""
    digest = _digests.get(code)
    if digest is None:
        text = repr(_code_key(code)).encode()
        digest = _digests[code] = hashlib.blake2b(text, digest_size=12).hexdigest()
    return digest


def _code_key(code: types.CodeType) -> tuple[Any, ...]:
    consts = tuple(_const_key(c) for c in code.co_consts)
    return (code.co_code, code.co_firstlineno, code.co_names, code.co_varnames, consts)


def _const_key(const: Any) -> Any:
    if isinstance(const, types.CodeType):
        return _code_key(const)
    if isinstance(const, frozenset):  # its order follows string hashing, per process
        return sorted(repr(_const_key(c)) for c in const)
    if isinstance(const, tuple):
        return tuple(_const_key(c) for c in const)
    return repr(const)


_reloaded: set[tuple[str, str]] = set()  # (module, digest) reloads tried in this worker


def current_function(module_name: str, qualname: str, digest: str) -> Any:
    """In the worker: the function ``module.qualname``, running the parent's code.

    A module reloaded in the parent (``importlib.reload``, IPython's autoreload)
    has new code that a worker which imported it earlier does not: the digest of
    the parent's code tells, and the worker reloads its module once to catch up.
    """
    module = importlib.import_module(module_name)
    fn = _attribute(module, qualname)
    key = (module_name, digest)
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType) or code_digest(code) == digest or key in _reloaded:
        return fn
    _reloaded.add(key)
    try:
        module = importlib.reload(module)
    except Exception:  # cannot reload here: run the code this worker has
        return fn
    return _attribute(module, qualname)


def _attribute(obj: Any, qualname: str) -> Any:
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
