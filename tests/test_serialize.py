"""Pickling of task functions: by-value functions are re-sent exactly when they change."""

from __future__ import annotations

import builtins
import io
import pickle
import types
from typing import Any

import pytest

import manycore as mc
from manycore._transport import _serialize


class _FreshMain(pickle.Unpickler):
    """Loads a task function as a worker would, into a fresh __main__ namespace."""

    def persistent_load(self, pid: Any) -> Any:
        return {"__builtins__": builtins, "__name__": "__main__"}


def _load(blob: bytes) -> Any:
    return _FreshMain(io.BytesIO(blob)).load()


def _main_function(source: str, name: str, env: dict[str, Any] | None = None) -> Any:
    """A function that looks typed into __main__ (so it travels by value)."""
    namespace: dict[str, Any] = {"__name__": "__main__", **(env or {})}
    exec(source, namespace)
    return namespace[name], namespace


def test_importable_function_is_pickled_once() -> None:
    assert _serialize.dumps_fn(len) is _serialize.dumps_fn(len)


def test_main_function_with_immutable_globals_is_cached() -> None:
    fn, _ = _main_function("K = 3\ndef f(x):\n    return x + K\n", "f")
    assert _serialize.dumps_fn(fn) is _serialize.dumps_fn(fn)


def test_rebinding_a_global_invalidates_the_cache() -> None:
    fn, ns = _main_function("K = 3\ndef f(x):\n    return x + K\n", "f")
    first = _serialize.dumps_fn(fn)
    ns["K"] = 4
    second = _serialize.dumps_fn(fn)
    assert first != second
    assert _load(second)(1) == 5


def test_mutable_global_is_never_cached() -> None:
    fn, ns = _main_function("CONFIG = {'k': 1}\ndef f(x):\n    return x + CONFIG['k']\n", "f")
    first = _serialize.dumps_fn(fn)
    ns["CONFIG"]["k"] = 2  # mutated in place: the same object, new content
    second = _serialize.dumps_fn(fn)
    assert _load(second)(1) == 3
    assert first is not second


def test_closure_and_helper_function_changes_are_seen() -> None:
    source = (
        "OFFSET = 1\n"
        "def helper(x):\n    return x + OFFSET\n"
        "def make(k):\n    def f(x):\n        return helper(x) * k\n    return f\n"
    )
    make, ns = _main_function(source, "make")
    f2 = make(2)
    first = _serialize.dumps_fn(f2)
    assert _serialize.dumps_fn(f2) is first
    ns["OFFSET"] = 10  # a global of a helper the task calls
    assert _load(_serialize.dumps_fn(f2))(1) == 22


def test_recursive_function_is_cached() -> None:
    fn, _ = _main_function("def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n", "fib")
    assert _serialize.dumps_fn(fn) is _serialize.dumps_fn(fn)
    assert isinstance(fn, types.FunctionType)


def test_a_reloaded_modules_function_is_pickled_again(monkeypatch: Any) -> None:
    # A reload gives the module a new __spec__ (even where IPython's autoreload
    # then patches the old function objects in place).
    import copy

    import serfns

    first = _serialize.dumps_fn(serfns.set_value)
    assert _serialize.dumps_fn(serfns.set_value) is first
    monkeypatch.setattr(serfns, "__spec__", copy.copy(serfns.__spec__))
    second = _serialize.dumps_fn(serfns.set_value)
    assert second != first
    assert _serialize.dumps_fn(serfns.set_value) is second


def test_a_rebound_large_global_is_not_kept_alive() -> None:
    import gc
    import weakref

    import serfns

    source = "CONFIG = ()\ndef f(x):\n    return (BIG, CONFIG, x)\n"
    fn, ns = _main_function(source, "f", {"BIG": serfns.Big("old")})
    first = _serialize.dumps_fn(fn)
    assert _serialize.dumps_fn(fn) == first  # cached: nothing in it can change unseen
    assert len(first) < 1000  # the large global is named, not pickled in
    old = weakref.ref(ns["BIG"])
    ns["BIG"] = serfns.Big("new")
    ns["CONFIG"] = {}  # mutable: the pickle cannot be cached any more
    del first
    _serialize.dumps_fn(fn)
    gc.collect()
    assert old() is None


def test_a_deleted_large_global_is_freed_though_its_function_lives() -> None:
    import gc
    import weakref

    np = pytest.importorskip("numpy")
    source = "def f(i):\n    return float(DATA[i])\n"
    fn, ns = _main_function(source, "f", {"DATA": np.arange(1 << 18, dtype=float)})
    with mc.Pool(1) as pool:
        assert pool.map(fn, [1, 2]) == [1.0, 2.0]
        assert pool.submit(fn, 3).result(timeout=30) == 3.0
        old = weakref.ref(ns["DATA"])
        ns["DATA"] = np.zeros(1 << 18)  # rebound (a cell re-run), then deleted
        del ns["DATA"]
        gc.collect()
        assert old() is None  # not held by the cached pickle of fn
        ns["DATA"] = np.full(1 << 18, 7.0)
        assert pool.submit(fn, 3).result(timeout=30) == 7.0
