"""Fingerprints for ``checkpoint=``: of a function, that changes when its code
changes, and of one input item, that changes when its content does.

A module function pickles by reference (its name only), so its pickle says
nothing about its code: the fingerprint hashes the code objects themselves.
Both must be the same in another process of the same program: nothing here
depends on ``id()``, memory addresses or string hash randomisation.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import pickle
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cloudpickle

__all__ = ["fingerprint", "function_name", "input_digest", "input_digests"]


def input_digests(items: Iterable[object]) -> list[bytes]:
    """A fingerprint of each item's content: its protocol-5 pickle itself when
    that is short (under 16 bytes once the fixed header is cut: small numbers,
    short strings; exact, and no hash to compute), else a 16-byte blake2b digest
    of it (the two never collide: they differ in length). Plain pickle first, the
    fast path; cloudpickle for what only it takes (lambdas, local classes); what
    neither takes is named by its type and ``repr()``. Array data is hashed from
    its out-of-band buffers, without a copy."""
    out = []
    bufs: list[pickle.PickleBuffer] = []
    keep = bufs.append
    dumps = pickle.dumps
    empty_set, frozen_set = _SET_OPS
    scalars = _SCALARS
    for obj in items:
        try:
            data = dumps(obj, 5, buffer_callback=keep)
        except Exception:
            out.append(_slow_digest(obj))
            continue
        if type(obj) not in scalars and (empty_set in data or frozen_set in data):
            # Perhaps a set of two or more: pickled in the order of its hashes,
            # which string hash randomisation changes from process to process. (A
            # byte that only looks like the opcode costs a slower pickle, never a
            # wrong one. Numbers and strings hold no set: not even looked at.)
            bufs.clear()
            data = _canonical(obj, keep)
        if bufs:
            out.append(_digest(data, bufs))
            bufs.clear()
            continue
        # b"\x80\x05" (protocol), then a 9-byte frame header if the body has 4+ bytes.
        body = data[11:] if data[2] == 0x95 else data[2:]
        out.append(body if len(body) < 16 else _digest(data, ()))
    return out


def input_digest(obj: object) -> bytes:
    """The fingerprint of one item (see :func:`input_digests`)."""
    return input_digests((obj,))[0]


_SET_OPS = (b"\x8f", b"\x91")  # EMPTY_SET and FROZENSET, pickle protocol 4+
_SCALARS = frozenset({int, float, str, bytes, bool, complex, type(None)})


def _canonical(obj: object, keep: Callable[[pickle.PickleBuffer], object] | None) -> bytes:
    """The pickle of ``obj`` with every set in it (through lists, tuples and
    dicts) written as a sorted tuple: the same in every process. (Picklers do
    not let a set be reduced another way: it is rewritten before.)"""
    return pickle.dumps(_sets_sorted(obj), 5, buffer_callback=keep)


def _sets_sorted(obj: Any) -> Any:
    kind = type(obj)
    if kind is set or kind is frozenset:
        parts = sorted((_sets_sorted(x) for x in obj), key=lambda x: pickle.dumps(x, 5))
        return (kind.__name__, tuple(parts))
    if kind is list:
        return [_sets_sorted(x) for x in obj]
    if kind is tuple:
        return tuple(_sets_sorted(x) for x in obj)
    if kind is dict:
        return {_sets_sorted(k): _sets_sorted(v) for k, v in obj.items()}
    return obj


def _slow_digest(obj: object) -> bytes:
    bufs: list[pickle.PickleBuffer] = []
    try:
        data = cloudpickle.dumps(obj, 5, buffer_callback=bufs.append)
    except Exception:
        bufs.clear()
        # Its repr() may hold a memory address, different in every process: the
        # type alone, so that a resume does not see a change that is not there.
        data = f"{type(obj).__module__}.{type(obj).__qualname__}".encode()
    return _digest(data, bufs)


def _digest(data: bytes, bufs: Iterable[pickle.PickleBuffer]) -> bytes:
    digest = hashlib.blake2b(data, digest_size=16)
    for buf in bufs:
        digest.update(buf.raw())
    return digest.digest()


def fingerprint(fn: Callable[..., object], star: bool) -> str:
    """A fingerprint of ``fn`` that changes when its code does, even for a module
    function that pickles by reference (its pickle is just its name): its name,
    its code objects (bytecode, constants, names; not line numbers), defaults,
    closure values and the code of the same-module functions it calls."""
    digest = hashlib.blake2b(b"starmap" if star else b"map", digest_size=16)
    _feed_callable(digest, fn, set())
    return digest.hexdigest()


def _feed_callable(digest: hashlib.blake2b, fn: object, seen: set[int]) -> None:
    if id(fn) in seen:  # recursion, or a helper reached twice
        return
    seen.add(id(fn))
    if isinstance(fn, functools.partial):
        _feed_callable(digest, fn.func, seen)
        digest.update(input_digest((fn.args, fn.keywords)))
        return
    if isinstance(fn, types.MethodType):
        _feed_callable(digest, fn.__func__, seen)
        digest.update(input_digest(fn.__self__))
        return
    wrapped = getattr(fn, "__wrapped__", None)  # functools.cache, lru_cache, wraps
    if callable(wrapped):
        _feed_callable(digest, wrapped, seen)
    if isinstance(fn, type):  # a class called per item: its methods' code counts
        for klass in fn.__mro__:
            if klass.__module__ != "builtins":
                for attr in sorted(vars(klass)):
                    method = vars(klass)[attr]
                    method = getattr(method, "__func__", method)  # static/class methods
                    method = inspect.unwrap(method) if callable(method) else method
                    if isinstance(method, types.FunctionType):
                        _feed_callable(digest, method, seen)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    digest.update(f"{getattr(fn, '__module__', None)}.{name}".encode())
    if isinstance(fn, types.FunctionType):
        _feed_code(digest, fn.__code__)
        digest.update(input_digest((fn.__defaults__, fn.__kwdefaults__)))
        for cell in fn.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(value, types.FunctionType):
                _feed_callable(digest, value, seen)
            else:
                digest.update(input_digest(value))
        for helper in _helpers(fn):
            _feed_callable(digest, helper, seen)
    elif not isinstance(fn, (type, types.BuiltinFunctionType)):  # an object with __call__
        call = type(fn).__call__  # fn is callable: its type has one
        if isinstance(call, types.FunctionType):
            _feed_callable(digest, call, seen)
        digest.update(input_digest(fn))


def _feed_code(digest: hashlib.blake2b, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const)
        else:
            digest.update(_const_text(const).encode())


def _const_text(const: object) -> str:
    # A frozenset constant (``x in {"a", "b"}``) iterates in an order that string
    # hash randomisation changes from run to run: sort it.
    if isinstance(const, frozenset):
        return "frozenset(" + ",".join(sorted(_const_text(c) for c in const)) + ")"
    if isinstance(const, tuple):
        return "(" + ",".join(_const_text(c) for c in const) + ")"
    return repr(const)


def _helpers(fn: types.FunctionType) -> Iterator[types.FunctionType]:
    """Functions of ``fn``'s own module that its code names (a change in a helper
    is a change in what ``fn`` computes); other modules' are not followed."""
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        for name in code.co_names:
            found = fn.__globals__.get(name)
            if isinstance(found, types.FunctionType) and found.__module__ == fn.__module__:
                yield found


def function_name(fn: object) -> str:
    """How messages name ``fn`` (a partial: by the function inside), with its
    module: two functions of one name in two modules are told apart."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "__main__" else name
