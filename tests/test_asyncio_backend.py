"""backend="asyncio": async functions on the pool's own event loop, bounded
concurrency, timeouts that cancel, and mc.amap/mc.aimap from a running loop."""

from __future__ import annotations

import asyncio
import functools
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

import pytest

import manycore as mc


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def nap(x: float) -> float:
    await asyncio.sleep(x)
    return x


async def add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


async def fail_on_three(x: int) -> int:
    await asyncio.sleep(0)
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x


class Peak:
    """Counts coroutines running at once; the highest count seen."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def __call__(self, x: Any, pause: float = 0.05) -> Any:
        self.now += 1  # one loop thread runs every coroutine: no lock needed
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(pause)
        finally:
            self.now -= 1
        return x


def _loop_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "manycore-asyncio"}


MapCall = Callable[..., list[Any]]


@pytest.fixture(params=["pool", "map", "amap"])
def map_call(request: pytest.FixtureRequest) -> Iterator[MapCall]:
    """The same map through each entry point: Pool.map, mc.map from sync code, and
    ``await mc.amap`` from a coroutine (with ``asyncio.run``)."""
    pools: list[mc.Pool] = []

    def call(fn: Callable[..., Any], items: Any, **options: Any) -> list[Any]:
        if request.param == "pool":
            pool = mc.Pool(backend="asyncio", concurrency=options.pop("concurrency", None))
            pools.append(pool)
            return pool.map(fn, items, **options)
        if request.param == "map":
            return mc.map(fn, items, backend="asyncio", **options)
        return asyncio.run(mc.amap(fn, items, backend="asyncio", **options))

    yield call
    for pool in pools:
        pool.shutdown()


# ------------------------------------------------------------------ the basics


def test_map_in_order_with_every_entry_point(map_call: MapCall) -> None:
    assert map_call(double, range(300)) == [2 * x for x in range(300)]
    assert map_call(double, []) == []


def test_default_concurrency_is_100_coroutines_in_flight(map_call: MapCall) -> None:
    peak = Peak()
    assert map_call(peak, range(250)) == list(range(250))
    assert peak.peak == 100  # the scheduler keeps that many items going, not 2 x CPUs


def test_concurrency_bounds_the_coroutines_running_at_once(map_call: MapCall) -> None:
    peak = Peak()
    assert map_call(peak, range(30), concurrency=7) == list(range(30))
    assert peak.peak == 7


def test_chunksize_items_still_run_side_by_side() -> None:
    peak = Peak()
    started = time.monotonic()
    out = mc.map(peak, range(40), backend="asyncio", concurrency=40, chunksize=10)
    assert out == list(range(40))
    assert peak.peak == 40
    assert time.monotonic() - started < 2  # 40 x 50 ms one after the other would be 2 s


def test_a_slow_item_holds_back_no_other_result() -> None:
    # One item per batch: after many quick items the planner would otherwise make
    # batches of several, and the quick neighbours of the slow one would wait.
    pauses = [0.0] * 60 + [0.4] + [0.0] * 60
    with mc.Pool(backend="asyncio", concurrency=2) as pool:
        got = list(pool.imap(nap, pauses, ordered=False))
    assert got == [0.0] * 120 + [0.4]


def test_imap_starmap_unordered_and_submit_keywords() -> None:
    with mc.Pool(backend="asyncio", concurrency=10) as pool:
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.map(add, [1, 2], [10, 20]) == [11, 22]
        # Unordered: results come as they finish, the quick ones first.
        got = list(pool.imap(nap, [0.3, 0.0, 0.0], ordered=False))
        assert got[-1] == 0.3 and sorted(got) == [0.0, 0.0, 0.3]
        assert pool.submit(add, 1, b=5).result(timeout=10) == 6
        assert pool.schedule(add, (2, 3)).result(timeout=10) == 5


def test_functions_that_return_coroutines_are_accepted() -> None:
    class Scaler:
        async def __call__(self, x: int) -> int:
            return 3 * x

    class Holder:
        async def method(self, x: int) -> int:
            return x + 1

    with mc.Pool(backend="asyncio") as pool:
        assert pool.map(Scaler(), [1, 2]) == [3, 6]
        assert pool.map(functools.partial(add, 10), [1, 2]) == [11, 12]
        assert pool.map(Holder().method, [1]) == [2]


# ---------------------------------------------------------------- bad arguments


def test_plain_function_is_refused_before_any_work() -> None:
    calls: list[int] = []

    def plain(x: int) -> int:
        calls.append(x)
        return x

    with mc.Pool(backend="asyncio") as pool:
        for attempt in (
            lambda: pool.map(plain, [1, 2]),
            lambda: pool.imap(plain, [1, 2]),  # at the call, not at the first next()
            lambda: pool.submit(plain, 1),
            lambda: mc.map(plain, [1], backend="asyncio"),
            lambda: mc.map(lambda x: double(x), [1], backend="asyncio"),
        ):
            with pytest.raises(TypeError, match=r"fn must be an async function \(async def\)"):
                attempt()
    assert calls == []


def test_async_function_on_another_backend_is_refused() -> None:
    with pytest.raises(TypeError, match=r"fn is an async function.*use backend='asyncio'"):
        mc.map(double, [1], backend="threads")
    with mc.Pool(1, backend="serial") as pool, pytest.raises(TypeError, match="async"):
        pool.submit(double, 1)


def test_concurrency_is_checked() -> None:
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        mc.Pool(backend="asyncio", concurrency=0)
    with pytest.raises(TypeError, match="concurrency must be a whole number"):
        mc.map(double, [1], backend="asyncio", concurrency=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency=4 applies only to backend='asyncio'"):
        mc.map(abs, [1], backend="threads", concurrency=4)
    with pytest.raises(ValueError, match="concurrency=4 applies only"):
        mc.Pool(backend="processes", concurrency=4)
    with pytest.raises(ValueError, match="workers=3 and concurrency=4 disagree"):
        mc.Pool(3, backend="asyncio", concurrency=4)
    with pytest.raises(ValueError, match="max_tasks_per_worker needs a backend"):
        mc.Pool(backend="asyncio", max_tasks_per_worker=10)
    with mc.Pool(4, backend="asyncio", concurrency=4) as pool:
        assert pool.workers == 4
    with mc.Pool(backend="asyncio") as pool:
        assert pool.workers == 100


# ------------------------------------------------------- failures and timeouts


def test_errors_follow_on_error_and_retries(map_call: MapCall) -> None:
    with pytest.raises(ValueError, match="bad input 3") as info:
        map_call(fail_on_three, range(6))
    assert info.value.__notes__ == ["manycore: raised while processing input item 3"]
    assert map_call(fail_on_three, range(6), on_error="skip") == [0, 1, 2, 4, 5]
    out = map_call(fail_on_three, range(6), on_error="collect")
    assert isinstance(out[3], mc.Failure) and out[3].index == 3
    assert isinstance(out[3].exception, ValueError)

    attempts: dict[int, int] = {}

    async def flaky(x: int) -> int:
        attempts[x] = attempts.get(x, 0) + 1
        if attempts[x] < 3:
            raise ConnectionError("try again")
        return x

    assert map_call(flaky, range(4), retries=2, retry_on=ConnectionError) == [0, 1, 2, 3]
    assert attempts == {0: 3, 1: 3, 2: 3, 3: 3}


def test_timeout_cancels_the_coroutine(map_call: MapCall) -> None:
    cancelled = threading.Event()

    async def slow_on_two(x: int) -> int:
        try:
            await asyncio.sleep(30 if x == 2 else 0.01)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return x

    started = time.monotonic()
    out = map_call(slow_on_two, range(5), timeout=0.3, on_error="collect")
    assert time.monotonic() - started < 5
    assert out[:2] == [0, 1] and out[3:] == [3, 4]
    assert isinstance(out[2], mc.Failure)
    error = out[2].exception
    assert isinstance(error, mc.TaskTimeout)
    assert (error.index, error.timeout) == (2, 0.3)
    assert "cancelled" in str(error)
    assert cancelled.wait(5)  # really stopped, not merely abandoned


def test_a_coroutine_that_ignores_its_cancel_does_not_stall_the_rest() -> None:
    async def stubborn(x: int) -> int:
        if x == 0:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # swallows every cancel
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    pass
        return x

    before = _loop_threads()
    started = time.monotonic()
    with mc.Pool(backend="asyncio", concurrency=1, timeout=0.2, on_error="collect") as pool:
        out = pool.map(stubborn, range(4))
        assert isinstance(out[0], mc.Failure) and out[1:] == [1, 2, 3]
    # The slot was freed at the timeout, and shutdown gives it a bounded grace.
    assert time.monotonic() - started < 5
    assert _loop_threads() == before


# ------------------------------------------------------ init, exit, state, shared


def test_init_exit_worker_state_and_shared() -> None:
    events: list[str] = []

    async def open_session(name: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        events.append("init")
        return {"name": name, "loop": asyncio.get_running_loop()}

    async def close_session() -> None:
        await asyncio.sleep(0)
        events.append(f"exit:{mc.worker_state()['name']}")

    async def use(x: int) -> tuple[str, bool, int]:
        state = mc.worker_state()
        same_loop = state["loop"] is asyncio.get_running_loop()
        return state["name"], same_loop, x + mc.shared()["offset"]

    with mc.Pool(
        backend="asyncio",
        init=open_session,
        init_args=("s1",),
        exit=close_session,
        shared={"offset": 100},
    ) as pool:
        assert pool.map(use, range(3)) == [("s1", True, 100), ("s1", True, 101), ("s1", True, 102)]
        assert pool.submit(use, 5).result(timeout=10) == ("s1", True, 105)
    assert events == ["init", "exit:s1"]  # once: one loop, one state


def test_init_that_raises_breaks_the_pool() -> None:
    def broken_init() -> None:
        raise RuntimeError("no session")

    with mc.Pool(backend="asyncio", init=broken_init) as pool:
        with pytest.raises(mc.PoolBroken, match="no session") as info:
            pool.map(double, range(5))
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(mc.PoolBroken):
            pool.submit(double, 1)


# ------------------------------------------------- submit, cancel, kill, shutdown


def test_awaiting_submit_from_another_loop() -> None:
    async def main(pool: mc.Pool) -> list[int]:
        return list(await asyncio.gather(*(pool.submit(double, i) for i in range(5))))

    with mc.Pool(backend="asyncio") as pool:
        assert asyncio.run(main(pool)) == [0, 2, 4, 6, 8]


def test_cancel_queued_and_force_cancel_running() -> None:
    stopped = threading.Event()

    async def wait_long(x: int) -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return x

    with mc.Pool(backend="asyncio", concurrency=1) as pool:
        running = pool.submit(wait_long, 1)
        queued = pool.submit(double, 2)
        assert queued.cancel()  # never started: the one slot is taken
        deadline = time.monotonic() + 5
        while not running.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not running.cancel()  # it runs: a plain cancel cannot stop it
        assert pool.cancel(running, force=True)  # a coroutine can be stopped
        with pytest.raises(CancelledError):
            running.result(timeout=5)
        assert stopped.wait(5)
        assert pool.submit(double, 4).result(timeout=5) == 8  # the slot is free again


def test_shutdown_waits_for_running_work_and_cancels_pending_on_request() -> None:
    before = _loop_threads()
    pool = mc.Pool(backend="asyncio", concurrency=1)
    first = pool.submit(nap, 0.2)
    second = pool.submit(nap, 0.0)
    deadline = time.monotonic() + 5
    while not first.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.shutdown(wait=True, cancel_pending=True)
    assert first.result(timeout=0) == 0.2  # ran to its end before shutdown returned
    assert second.cancelled()
    assert _loop_threads() == before
    with pytest.raises(mc.PoolClosed):
        pool.submit(nap, 0.0)
    pool.shutdown()  # again: harmless


def test_terminate_cancels_running_coroutines_at_once() -> None:
    before = _loop_threads()
    stopped = threading.Event()

    async def wait_long(x: int) -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return x

    pool = mc.Pool(backend="asyncio")
    futures = [pool.submit(wait_long, i) for i in range(3)]
    time.sleep(0.1)
    started = time.monotonic()
    pool.terminate()
    assert time.monotonic() - started < 1
    for future in futures:
        with pytest.raises(CancelledError):
            future.result(timeout=5)
    assert stopped.wait(5)
    deadline = time.monotonic() + 5
    while _loop_threads() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _loop_threads() == before


def test_a_blocking_map_inside_a_task_is_refused_not_hung() -> None:
    async def nested(x: int) -> Any:
        return mc.map(double, [x], backend="asyncio")  # the same default pool

    out = mc.map(nested, [1], backend="asyncio", on_error="collect")
    assert isinstance(out[0], mc.Failure)
    assert isinstance(out[0].exception, RuntimeError)
    assert "await mc.amap" in str(out[0].exception)


def test_sync_map_inside_a_running_loop_works() -> None:
    # As in a notebook, where the main thread runs an event loop: asyncio.run()
    # would refuse, the pool's own loop does not care (the caller's loop waits).
    async def main() -> list[int]:
        return mc.map(double, range(5), backend="asyncio")

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]


def test_sync_map_from_a_thread_while_the_main_thread_runs_a_loop() -> None:
    async def main() -> list[int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        out = await asyncio.to_thread(mc.map, nap, [0.2] * 20, backend="asyncio")
        ticker.cancel()
        assert ticks >= 5  # this loop ran on meanwhile
        return out

    assert asyncio.run(main()) == [0.2] * 20


# ------------------------------------------------------------ amap and aimap


@pytest.mark.parametrize("backend", ["serial", "threads", "processes"])
def test_amap_works_with_every_backend(backend: str) -> None:
    async def main() -> list[int]:
        return await mc.amap(abs, range(-5, 0), backend=backend, workers=2)

    assert asyncio.run(main()) == [5, 4, 3, 2, 1]


def test_amap_does_not_block_the_callers_loop() -> None:
    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        assert await mc.amap(time.sleep, [0.1] * 4, backend="threads", workers=2) == [None] * 4
        ticker.cancel()
        return ticks

    assert asyncio.run(main()) >= 5  # ~0.2 s of blocking work: the loop ticked all along


def test_cancelling_amap_stops_the_rest_of_the_map() -> None:
    started: list[int] = []
    stopped = threading.Event()

    async def slow(x: int) -> int:
        started.append(x)
        try:
            await asyncio.sleep(2)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return x

    async def main() -> None:
        call = asyncio.create_task(mc.amap(slow, range(100), backend="asyncio", concurrency=5))
        deadline = time.monotonic() + 5
        while len(started) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())
    assert stopped.wait(5)  # the running coroutines were cancelled
    seen = len(started)
    time.sleep(0.3)
    assert seen == len(started) == 5, (seen, started)  # and nothing more started


def test_amap_under_wait_for_raises_timeout_and_stops() -> None:
    started: list[float] = []

    def sleepy(x: float) -> float:
        started.append(x)
        time.sleep(x)
        return x

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                mc.amap(sleepy, [0.2] * 50, backend="threads", workers=2), timeout=0.3
            )

    asyncio.run(main())
    seen = len(started)
    time.sleep(0.3)
    assert len(started) <= seen + 2 < 50  # the threads finish their call; no new ones start


def test_aimap_yields_as_results_come_and_raises_in_turn() -> None:
    async def main() -> None:
        got = [x async for x in mc.aimap(double, range(500), backend="asyncio")]
        assert got == [2 * x for x in range(500)]
        unordered = [x async for x in mc.aimap(nap, [0.3, 0.0], backend="asyncio", ordered=False)]
        assert unordered == [0.0, 0.3]
        before: list[int] = []
        with pytest.raises(ValueError, match="bad input 3"):
            async for x in mc.aimap(fail_on_three, range(10), backend="asyncio"):
                before.append(x)
        assert before == [0, 1, 2]
        threaded = [x async for x in mc.aimap(abs, [-1, -2], backend="threads")]
        assert threaded == [1, 2]

    asyncio.run(main())


def test_aimap_reads_lazy_input_only_as_needed_and_aclose_stops_it() -> None:
    pulled = itertools.count()

    def endless() -> Iterator[int]:
        for i in itertools.count():
            next(pulled)
            yield i

    async def main() -> None:
        results = mc.aimap(double, endless(), backend="asyncio", concurrency=4)
        got = []
        async for x in results:
            got.append(x)
            if len(got) == 10:
                break
        await results.aclose()  # type: ignore[attr-defined]
        assert got == [2 * x for x in range(10)]

    asyncio.run(main())
    read = next(pulled)
    time.sleep(0.2)
    assert read == next(pulled) - 1  # nothing more was read after aclose()
    assert read < 1000  # bounded read-ahead, not the endless input


def test_aimap_checks_arguments_at_the_call() -> None:
    with pytest.raises(TypeError, match="fn must be callable"):
        mc.aimap(42, [1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency=2 applies only"):
        mc.aimap(abs, [1], backend="threads", concurrency=2)

    async def main() -> None:
        with pytest.raises(TypeError, match="fn must be an async function"):
            await mc.amap(abs, [1], backend="asyncio")

    asyncio.run(main())


# ------------------------------------------- work a task gives to its own pool


def test_amap_inside_tasks_that_fill_every_slot_of_the_same_pool() -> None:
    # Three outer items, two slots: every slot is held by an item waiting for
    # its inner map on the same default pool. The waiting items lend their slots.
    peak = Peak()

    async def outer(x: int) -> int:
        inner = await mc.amap(peak, range(4), backend="asyncio", concurrency=2)
        return x + sum(inner)

    started = time.monotonic()
    # timeout=: a hang fails the items instead of the test run.
    out = mc.map(outer, range(3), backend="asyncio", concurrency=2, timeout=5)
    assert out == [6, 7, 8]
    assert time.monotonic() - started < 2
    assert peak.peak <= 2  # the inner items still keep to the concurrency


def test_submit_and_gather_inside_a_task_of_a_one_slot_pool() -> None:
    with mc.Pool(backend="asyncio", concurrency=1, timeout=5) as pool:

        async def one(x: int) -> int:
            return await pool.submit(double, x)

        async def many(x: int) -> int:
            return sum(await asyncio.gather(*(pool.submit(double, i) for i in range(x))))

        async def deep(n: int) -> int:
            return 1 if n == 0 else sum(await mc.amap(deep, [n - 1] * 2, backend="asyncio"))

        assert pool.map(one, range(3)) == [0, 2, 4]
        assert pool.map(many, [3, 4]) == [6, 12]
        assert mc.map(deep, [3, 2], backend="asyncio", concurrency=1, timeout=5) == [8, 4]
        assert pool._backend._free == 1  # every lent slot came back


def test_result_of_a_future_of_the_same_pool_inside_its_task_is_refused() -> None:
    pool = mc.Pool(backend="asyncio", concurrency=4)
    try:

        async def blocking(x: int) -> int:
            return pool.submit(double, x).result()  # would freeze the pool's loop

        async def fine(x: int) -> int:
            future = pool.submit(double, x)
            await future
            return future.result() + (future.exception() is None)

        with pytest.raises(RuntimeError, match=r"await pool\.submit"):
            pool.submit(blocking, 1).result(timeout=2)
        assert pool.submit(fine, 1).result(timeout=2) == 3
        assert pool.submit(double, 4).result(timeout=2) == 8  # the loop runs on
    finally:
        pool.terminate()


async def cancelled_by_itself(x: int) -> int:
    # The item awaits something that someone else cancels: not a timeout or a
    # kill of manycore's, so it is this item's error, not a cancelled map.
    if x == 1:
        waited = asyncio.ensure_future(asyncio.sleep(10))
        asyncio.get_running_loop().call_later(0.01, waited.cancel)
        await waited
    return x


def test_an_item_that_ends_with_its_own_cancelled_error_fails_as_an_item() -> None:
    with pytest.raises(RuntimeError, match="input item 1 ended with asyncio") as info:
        mc.map(cancelled_by_itself, range(3), backend="asyncio")
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    out = mc.map(cancelled_by_itself, range(3), backend="asyncio", on_error="collect")
    assert out[::2] == [0, 2]
    assert isinstance(out[1], mc.Failure) and isinstance(out[1].exception, RuntimeError)

    tries = itertools.count()

    async def once(x: int) -> int:
        return await cancelled_by_itself(1 if next(tries) == 0 else x)

    assert mc.map(once, [5], backend="asyncio", retries=1) == [5]

    async def main() -> None:
        with pytest.raises(RuntimeError, match="input item 1"):
            await mc.amap(cancelled_by_itself, range(3), backend="asyncio")
        task = asyncio.current_task()
        assert task is not None
        if sys.version_info >= (3, 11):
            assert not task.cancelling()  # the caller was not cancelled

    asyncio.run(main())


def test_two_tasks_can_share_one_aimap() -> None:
    async def main() -> tuple[list[int], list[int]]:
        results = mc.aimap(nap, [0.01] * 20, backend="asyncio", concurrency=4)
        got: tuple[list[float], list[float]] = ([], [])

        async def consume(k: int) -> None:
            async for y in results:
                got[k].append(y)

        tasks = [asyncio.create_task(consume(k)) for k in (0, 1)]
        done, pending = await asyncio.wait(tasks, timeout=3)
        for task in pending:
            task.cancel()
        return [len(done), len(pending)], sorted(got[0] + got[1])

    counts, seen = asyncio.run(main())
    assert counts == [2, 0]  # both consumers saw the end
    assert seen == [0.01] * 20  # each result once


def _check_no_pool_leaked(retired: list[mc.Pool]) -> None:
    from manycore._api import _calls as _api

    assert len(retired) == 2  # six pools, four kept: two evicted while in use
    assert all(pool.state is mc.PoolState.CLOSED for pool in retired)  # closed after all
    assert not _api._retired and not _api._leases


def test_an_evicted_default_pool_closes_after_the_calls_that_use_it() -> None:
    from manycore._api import _calls as _api

    mc.shutdown_default_pools()
    go, started = threading.Event(), itertools.count()

    def item(x: int) -> int:
        next(started)
        go.wait(5)
        return x

    results: dict[int, Any] = {}

    def call(workers: int) -> None:
        try:
            results[workers] = mc.map(item, range(3), backend="threads", workers=workers)
        except Exception as exc:
            results[workers] = exc

    threads = [threading.Thread(target=call, args=(w,)) for w in range(1, 7)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while next(started) < 15 + 1 and time.monotonic() < deadline:  # 1+2+3*4 items running
        time.sleep(0.01)
    retired = list(getattr(_api, "_retired", ()))  # six pools: two evicted while in use
    go.set()
    for thread in threads:
        thread.join(10)
    try:
        assert results == {w: [0, 1, 2] for w in range(1, 7)}
        _check_no_pool_leaked(retired)
    finally:
        mc.shutdown_default_pools()


def test_an_evicted_default_pool_closes_after_the_amaps_that_use_it() -> None:
    from manycore._api import _calls as _api

    mc.shutdown_default_pools()
    retired: list[mc.Pool] = []

    go, started = threading.Event(), itertools.count()

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()

        async def item(x: int) -> int:
            next(started)
            while not go.is_set():
                await asyncio.sleep(0.005)
            return x

        async def one(c: int) -> Any:
            try:
                return await mc.amap(item, range(3), backend="asyncio", concurrency=c)
            except Exception as exc:
                return exc

        calls = asyncio.gather(*(one(c) for c in range(1, 7)))
        deadline = loop.time() + 5
        while next(started) < 15 + 1 and loop.time() < deadline:  # 1+2+3*4 items running
            await asyncio.sleep(0.01)
        retired.extend(getattr(_api, "_retired", ()))
        go.set()
        return list(await calls)

    try:
        assert asyncio.run(main()) == [[0, 1, 2]] * 6
        _check_no_pool_leaked(retired)
    finally:
        mc.shutdown_default_pools()


# ------------------------------------------------------ a loop that goes wrong


def test_a_loop_stopped_under_the_pool_breaks_it_instead_of_hanging() -> None:
    async def rogue(x: int) -> int:
        asyncio.get_running_loop().stop()
        await asyncio.sleep(0.1)
        return x

    pool = mc.Pool(backend="asyncio")
    try:
        slow = pool.submit(nap, 1.0)
        with pytest.raises(mc.PoolBroken, match="event loop ended unexpectedly"):
            pool.submit(rogue, 1).result(timeout=2)
        with pytest.raises(mc.PoolBroken):
            slow.result(timeout=2)  # what ran alongside fails too
        with pytest.raises(mc.PoolBroken):
            pool.submit(double, 2)  # refused, not queued onto a dead loop
        with pytest.raises(mc.PoolBroken):
            pool.map(double, range(3))
    finally:
        pool.shutdown()


def _exit_raises_system_exit() -> None:
    raise SystemExit(3)


async def _exit_is_cancelled() -> None:
    waited = asyncio.ensure_future(asyncio.sleep(5))
    asyncio.get_running_loop().call_soon(waited.cancel)
    await waited


@pytest.mark.parametrize("exit_fn", [_exit_raises_system_exit, _exit_is_cancelled])
def test_an_exit_that_raises_a_base_exception_is_reported_not_fatal(
    exit_fn: Callable[[], Any],
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    died: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", died.append)

    async def agen() -> Any:
        try:
            yield 1
            await asyncio.sleep(10)
        finally:
            closed.set()

    closed = threading.Event()
    gens = []

    async def open_gen(x: int) -> int:
        gen = agen()  # left open: the loop closes it at the end
        gens.append(gen)
        return await gen.__anext__() + x

    pool = mc.Pool(backend="asyncio", exit=exit_fn)
    assert pool.map(open_gen, [1, 2]) == [2, 3]
    started = time.monotonic()
    pool.shutdown()
    assert time.monotonic() - started < 2
    assert died == []  # the loop thread ended normally
    assert closed.is_set()  # and finished its work: open async generators were closed
    err = capfd.readouterr().err
    assert "SystemExit: 3" in err or "CancelledError" in err
