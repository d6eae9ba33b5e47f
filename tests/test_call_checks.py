"""A call's options are checked before any work: no default pool, no worker
process is started for a call that is refused; an ``async def`` function with
no backend named runs on asyncio."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

import manycore as mc
from manycore._api import _calls as _api

# (option, bad value, words the message must hold: the argument, what was expected)
BAD_OPTIONS = [
    ("timeout", -1, r"timeout must be above 0"),
    ("timeout", "10", r"timeout must be a number of seconds"),
    ("on_error", "ignore", r"on_error='ignore' is not valid; choose one of 'raise'"),
    ("chunksize", 0, r"chunksize must be at least 1"),
    ("chunksize", 2.5, r"chunksize must be a whole number"),
    ("retries", -1, r"retries must be at least 0"),
    ("retry_on", 3, r"retry_on must be an exception class"),
    ("ordered", "yes", r"ordered must be True or False"),
    ("progress", 3, r"progress must be True, False or a label"),
]


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@pytest.fixture
def no_default_pool() -> Iterator[None]:
    """No default pool runs before the test; none may be left after it."""
    mc.shutdown_default_pools()
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    assert not _api._pools, "a default pool was started for a refused call"
    started = {p.pid for p in psutil.Process().children(recursive=True)} - children
    assert not started, f"worker processes were started for a refused call: {started}"
    mc.shutdown_default_pools()


def _calls() -> list[tuple[str, Callable[..., Any]]]:
    def run_amap(**options: Any) -> Any:
        return asyncio.run(mc.amap(abs, [1, 2], **options))

    return [
        ("map", lambda **o: mc.map(abs, [1, 2], **o)),
        ("imap", lambda **o: mc.imap(abs, [1, 2], **o)),
        ("starmap", lambda **o: mc.starmap(abs, [(1,), (2,)], **o)),
        ("amap", run_amap),
    ]


@pytest.mark.parametrize(("option", "value", "message"), BAD_OPTIONS)
@pytest.mark.parametrize("backend", ["processes", "threads"])
@pytest.mark.usefixtures("no_default_pool")
def test_a_bad_option_starts_no_pool(option: str, value: Any, message: str, backend: str) -> None:
    for name, call in _calls():
        if name == "amap" and option == "progress":
            continue  # amap takes no progress bar
        with pytest.raises((TypeError, ValueError), match=message):
            call(backend=backend, **{option: value})


@pytest.mark.usefixtures("no_default_pool")
def test_stats_and_fn_are_checked_before_the_pool_starts() -> None:
    with pytest.raises(TypeError, match="stats must be True or False"):
        mc.map(abs, [1], stats="yes")
    with pytest.raises(TypeError, match="stats must be True or False"):
        mc.starmap(abs, [(1,)], stats=1)
    # An async function on a backend that cannot run it: refused before a worker starts.
    with pytest.raises(TypeError, match=r"async function.*backend='processes'"):
        mc.map(double, [1], backend="processes")
    with pytest.raises(TypeError, match=r"async def.*backend='asyncio'"):
        mc.map(abs, [1], backend="asyncio")


@pytest.mark.parametrize(("option", "value", "message"), BAD_OPTIONS)
def test_pool_methods_refuse_a_bad_option_before_any_work(
    option: str, value: Any, message: str
) -> None:
    ran: list[int] = []
    lock = threading.Lock()

    def record(x: int) -> int:
        with lock:
            ran.append(x)
        return x

    with mc.Pool(2, backend="threads") as pool:
        for method in (pool.map, pool.imap):
            with pytest.raises((TypeError, ValueError), match=message):
                method(record, [1, 2], **{option: value})
        with pytest.raises((TypeError, ValueError), match=message):
            pool.starmap(record, [(1,)], **{option: value})
        if option in ("timeout", "retries", "retry_on"):
            with pytest.raises((TypeError, ValueError), match=message):
                pool.schedule(record, (1,), **{option: value})
    assert ran == []


def test_async_function_without_a_backend_runs_on_asyncio() -> None:
    assert mc.map(double, [1, 2, 3]) == [2, 4, 6]
    assert list(mc.imap(double, [1, 2])) == [2, 4]
    assert mc.starmap(double, [(4,)]) == [8]
    assert asyncio.run(mc.amap(double, [5])) == [10]
    # A plain function still goes to processes by default.
    assert mc.map(abs, [-1]) == [1]
    assert _api.default_pool_running("processes", None, None)


def test_a_backend_the_user_named_is_kept_for_an_async_function() -> None:
    with pytest.raises(TypeError, match="use backend='asyncio'"):
        mc.map(double, [1], backend="threads")
    with pytest.raises(TypeError, match="use backend='asyncio'"):
        asyncio.run(mc.amap(double, [1], backend="processes"))


def test_on_a_closed_pool_a_bad_option_is_named_first() -> None:
    """As concurrent.futures does (``map(chunksize=0)`` after ``shutdown()`` is a
    ValueError): the call is wrong whatever the pool's state; a good call on a
    closed pool is PoolClosed."""
    pool = mc.Pool(2, backend="threads")
    pool.shutdown()
    with pytest.raises(ValueError, match="timeout"):
        pool.map(abs, [1], timeout=-1)
    with pytest.raises(ValueError, match="chunksize"):
        pool.imap(abs, [1], chunksize=0)
    with pytest.raises(ValueError, match="retries"):
        pool.schedule(abs, (1,), retries=-1)
    with pytest.raises(mc.PoolClosed):
        pool.map(abs, [1], timeout=1)
    with pytest.raises(mc.PoolClosed):
        pool.schedule(abs, (1,), retries=1)


@pytest.mark.parametrize(
    ("given", "ours", "facade"),
    [
        ({"processes": 2}, "workers=", "manycore.multiprocessing.Pool"),
        ({"initializer": print}, "init=", "manycore.Executor"),
        ({"maxtasksperchild": 3}, "max_tasks_per_worker=", "manycore.multiprocessing.Pool"),
        ({"max_workers": 2}, "workers=", "manycore.Executor"),
        ({"mp_context": None}, "start_method=", "manycore.Executor"),
    ],
)
def test_another_librarys_option_names_manycores_spelling(
    given: dict[str, object], ours: str, facade: str
) -> None:
    (name,) = given
    with pytest.raises(TypeError, match=rf"'{name}'.*spells it {ours}.*{facade}"):
        mc.Pool(**given)  # type: ignore[call-arg]


def test_an_unknown_option_is_still_a_plain_type_error() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'bogus'$"):
        mc.Pool(bogus=1)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", ["join", "apply_async", "imap_unordered", "map_async"])
def test_a_multiprocessing_method_says_what_to_use(name: str) -> None:
    with mc.Pool(1, backend="threads") as pool:
        with pytest.raises(AttributeError, match=f"'{name}': use .*manycore.multiprocessing.Pool"):
            getattr(pool, name)
        with pytest.raises(AttributeError, match=r"'nothing'$"):
            pool.nothing  # type: ignore[attr-defined]  # noqa: B018
        assert not hasattr(pool, "apply")


class _AsyncCall:
    async def __call__(self, x: int) -> int:
        return x

    async def method(self, x: int) -> int:
        return x

    def plain(self, x: int) -> int:
        return x


def _tagged(x: int) -> int:
    return x


_tagged.note = "a function with attributes of its own"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fn", "is_async"),
    [
        (double, True),
        (_tagged, False),
        (lambda x: x, False),
        (abs, False),
        ((1).__add__, False),  # a method-wrapper
        (functools.partial(double, 1), True),
        (functools.partial(functools.partial(double), 1), True),
        (functools.partial(_tagged, 1), False),
        (_AsyncCall(), True),
        (_AsyncCall().method, True),
        (_AsyncCall().plain, False),
        (str, False),
    ],
)
def test_is_async_callable(fn: Callable[..., object], is_async: bool) -> None:
    from manycore.backends import is_async_callable

    assert is_async_callable(fn) is is_async


@pytest.mark.skipif(
    not hasattr(inspect, "markcoroutinefunction"), reason="Python 3.12+: markcoroutinefunction"
)
def test_is_async_callable_sees_a_function_marked_as_coroutine() -> None:
    from manycore.backends import is_async_callable

    def returns_awaitable(x: int) -> Any:
        return double(x)

    assert not is_async_callable(returns_awaitable)
    marked = inspect.markcoroutinefunction(returns_awaitable)  # type: ignore[attr-defined]
    assert is_async_callable(marked)
