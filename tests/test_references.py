"""What a pool hands out keeps what it needs alive, and nothing more: an imap
iterator keeps its pool; a finished task's future and result are freed as soon
as the user drops them (no reference cycle, no idle thread holding them)."""

from __future__ import annotations

import contextlib
import gc
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import manycore as mc
from conftest import PROCESS_BACKENDS
from helpers import square


async def async_abs(x: int) -> int:
    return abs(x)


def test_imap_keeps_a_pool_made_for_it(backend: tuple[str, str | None]) -> None:
    name, method = backend
    xs = range(-20, 20)
    assert list(mc.Pool(2, backend=name, start_method=method).imap(abs, xs)) == [abs(x) for x in xs]
    it = mc.Pool(2, backend=name, start_method=method).imap(square, range(10), chunksize=1)
    gc.collect()  # even a full collection leaves the pool alone while its iterator lives
    assert next(it) == 0
    gc.collect()
    assert list(it) == [x * x for x in range(1, 10)]


def test_imap_keeps_an_asyncio_pool_made_for_it() -> None:
    assert list(mc.Pool(2, backend="asyncio").imap(async_abs, [-1, -2, 3])) == [1, 2, 3]


def test_a_pool_dropped_with_its_iterator_is_shut_down(backend: tuple[str, str | None]) -> None:
    from manycore._core._batch import Batch

    name, method = backend
    pool = mc.Pool(2, backend=name, start_method=method)
    engine = pool._backend
    it = pool.imap(square, range(4))
    assert next(it) == 0
    del pool
    gc.collect()
    assert next(it) == 1  # the iterator still holds its pool
    del it  # now both are unreachable: the pool's finalizer shuts its workers down
    gc.collect()
    with pytest.raises(mc.PoolClosed):
        engine.submit(Batch(square, [1]), lambda batch, result: None)


class Thing:
    """A result that can be watched with a weak reference."""

    def __init__(self, value: int):
        self.value = value


def make_thing(value: int) -> Thing:
    return Thing(value)


def slow_thing(value: int) -> Thing:
    time.sleep(0.3)  # the threads' watchdog is watching it meanwhile
    return Thing(value)


async def make_thing_async(value: int) -> Thing:
    return Thing(value)


def _freed(ref: Any, seconds: float = 5.0) -> bool:
    """``ref`` dies within ``seconds`` (no gc.collect: only reference counts)."""
    deadline = time.monotonic() + seconds
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    return ref() is None


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """A reference cycle would keep the object until the cyclic GC ran: with
    the GC off, only reference counting can free it."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _check_no_stale_reference(pool: mc.Pool, fn: Any) -> None:
    with _no_cyclic_gc():
        future = pool.submit(fn, 7)
        result = future.result(timeout=30)
        assert result.value == 7
        ref = weakref.ref(result)
        del future, result
        assert _freed(ref), "the result outlived its future and the user's reference"
        # The standard library's test_no_stale_references: an object the task
        # holds (here the function's bound instance), the future dropped at once.
        thing = Thing(3)
        ref = weakref.ref(thing)
        pool.submit(_ValueOf(thing), 0).result(timeout=30)
        del thing
        assert _freed(ref), "the task's argument outlived its finished task"


class _ValueOf:
    def __init__(self, thing: Thing):
        self.thing = thing

    def __call__(self, _: int) -> int:
        return self.thing.value


class _AsyncValueOf(_ValueOf):
    async def __call__(self, _: int) -> int:  # type: ignore[override]
        return self.thing.value


def test_no_stale_references(backend: tuple[str, str | None]) -> None:
    name, method = backend
    with mc.Pool(2, backend=name, start_method=method) as pool:
        _check_no_stale_reference(pool, make_thing)
        # With a timeout too (threads: the watchdog must not keep the last task either).
        with _no_cyclic_gc():
            result = pool.schedule(slow_thing, (5,), timeout=30).result(timeout=30)
            ref = weakref.ref(result)
            del result
            assert _freed(ref)


def test_no_stale_references_asyncio() -> None:
    with mc.Pool(2, backend="asyncio") as pool, _no_cyclic_gc():
        result = pool.submit(make_thing_async, 7).result(timeout=30)
        ref = weakref.ref(result)
        del result
        assert _freed(ref), "the result outlived its future and the user's reference"
        thing = Thing(3)
        ref = weakref.ref(thing)
        pool.submit(_AsyncValueOf(thing), 0).result(timeout=30)
        del thing
        assert _freed(ref), "the task's argument outlived its finished task"


# Not serial: it runs the task inside submit(), so the first try's traceback
# leads back through submit()'s own frames, which hold the future.
@pytest.mark.parametrize(
    ("name", "timeout"), [("threads", None), ("threads", 30.0), ("asyncio", None)]
)
def test_no_stale_reference_after_a_retry(name: str, timeout: float | None) -> None:
    """The first try's exception lives on in a cycle (its traceback's frames):
    none of those frames may hold the task, or its future and result."""
    tries: list[int] = []

    def flaky_thing(value: int) -> Thing:
        tries.append(value)
        if len(tries) == 1:
            raise ValueError("first try fails")
        return Thing(value)

    async def flaky_thing_async(value: int) -> Thing:
        return flaky_thing(value)

    fn = flaky_thing_async if name == "asyncio" else flaky_thing
    with mc.Pool(1, backend=name) as pool, _no_cyclic_gc():
        result = pool.schedule(fn, (4,), retries=1, timeout=timeout).result(timeout=30)
        assert result.value == 4 and tries == [4, 4]
        ref = weakref.ref(result)
        del result
        assert _freed(ref), "the retried task's result outlived its future"


def test_no_stale_reference_while_a_timed_out_thread_goes_on() -> None:
    """A thread given up on after a timeout goes on with its call (maybe for ever):
    it must not keep the task's future, and so the retry's result, alive."""
    import threading

    release = threading.Event()
    tries: list[int] = []

    def stuck_first(value: int) -> Thing:
        tries.append(value)
        if len(tries) == 1:
            release.wait(30)
        return Thing(value)

    with mc.Pool(1, backend="threads") as pool, _no_cyclic_gc():
        try:
            result = pool.schedule(stuck_first, (4,), retries=1, timeout=0.3).result(timeout=30)
            assert result.value == 4 and tries == [4, 4]
            ref = weakref.ref(result)
            del result
            assert _freed(ref), "the abandoned thread kept the retried task's result"
        finally:
            release.set()


@pytest.mark.slow
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
@pytest.mark.parametrize("stall", [0.0, 30.0], ids=["raised", "timed-out"])
def test_no_stale_reference_after_a_retry_on_processes(
    backend: tuple[str, str], stall: float, tmp_path: Any
) -> None:
    from stdlibfns import box_after_a_first_failure

    method = backend[1]
    with mc.Pool(1, start_method=method) as pool, _no_cyclic_gc():
        marker = str(tmp_path / "tried")
        future = pool.schedule(box_after_a_first_failure, (marker, 4, stall), retries=1, timeout=1)
        result = future.result(timeout=30)
        assert result.value == 4
        ref = weakref.ref(result)
        del future, result
        assert _freed(ref), "the retried task's result outlived its future"
        values = pool.map(
            box_after_a_first_failure, [marker + "2"], [5], [stall], retries=1, timeout=1
        )
        ref = weakref.ref(values[0])
        del values
        assert _freed(ref), "the retried item's result outlived the map"
