"""``await mc.amap(...)`` and ``await pool.submit(...)`` from a running event
loop run the coroutines on that loop (the caller's), so objects bound to it (an
``aiohttp.ClientSession``, an ``asyncio.Lock``, a future) work inside them."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import CancelledError
from typing import Any

import pytest

import manycore as mc

_loop_of_caller: list[asyncio.AbstractEventLoop] = []


async def on_callers_loop(x: int) -> int:
    """Fails unless it runs on the loop of the coroutine that awaits it."""
    assert asyncio.get_running_loop() is _loop_of_caller[-1], "not on the caller's loop"
    await asyncio.sleep(0.01)
    return x * 2


async def uses_callers_future(pair: tuple[asyncio.Future[int], int]) -> int:
    """Awaits a future made in the caller's loop (which only works there)."""
    future, x = pair
    return await future + x


def _run(main: Any) -> Any:
    async def wrapper() -> Any:
        _loop_of_caller.append(asyncio.get_running_loop())
        try:
            return await main()
        finally:
            _loop_of_caller.pop()

    return asyncio.run(wrapper())


def test_amap_runs_on_the_callers_loop() -> None:
    async def main() -> list[int]:
        return await mc.amap(on_callers_loop, range(5), backend="asyncio")

    assert _run(main) == [0, 2, 4, 6, 8]


def test_amap_of_an_async_function_with_no_backend_named() -> None:
    async def main() -> list[int]:
        return await mc.amap(on_callers_loop, range(3))

    assert _run(main) == [0, 2, 4]


def test_aimap_runs_on_the_callers_loop() -> None:
    async def main() -> list[int]:
        return [y async for y in mc.aimap(on_callers_loop, range(4), backend="asyncio")]

    assert _run(main) == [0, 2, 4, 6]


def test_awaited_submit_runs_on_the_callers_loop() -> None:
    async def main() -> list[int]:
        with mc.Pool(2, backend="asyncio") as pool:
            first = await pool.submit(on_callers_loop, 1)
            rest = await asyncio.gather(*(pool.submit(on_callers_loop, x) for x in (2, 3)))
            return [first, *rest]

    assert _run(main) == [2, 4, 6]


def test_objects_of_the_callers_loop_work_in_the_tasks() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.05, future.set_result, 10)
        with mc.Pool(2, backend="asyncio") as pool:
            one = await pool.submit(uses_callers_future, (future, 1))
        return [one, *await mc.amap(uses_callers_future, [(future, 2), (future, 3)])]

    assert _run(main) == [11, 12, 13]


def test_a_timeout_cancels_the_call_on_the_callers_loop() -> None:
    async def main() -> bool:
        cancelled = asyncio.Event()

        async def hang(_: int) -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with mc.Pool(1, backend="asyncio") as pool, pytest.raises(mc.TaskTimeout):
            await pool.schedule(hang, (1,), timeout=0.1)
        await asyncio.wait_for(cancelled.wait(), 5)
        return True

    assert _run(main)


def test_blocking_on_such_a_future_in_its_own_loop_is_refused() -> None:
    """Its call runs on this very loop: result() there would wait forever."""

    async def main() -> int:
        with mc.Pool(1, backend="asyncio") as pool:
            future = pool.submit(on_callers_loop, 4)
            with pytest.raises(RuntimeError, match="await"):
                future.result(timeout=5)
            return await future

    assert _run(main) == 8


def test_mc_wait_and_as_completed_on_such_futures_in_their_own_loop_are_refused() -> None:
    """They would block the loop that runs the calls: until the timeout, with
    nothing done, or for ever. A poll (timeout=0) is fine."""

    async def main() -> list[int]:
        with mc.Pool(2, backend="asyncio") as pool:
            futures = [pool.submit(on_callers_loop, x) for x in (1, 2)]
            with pytest.raises(RuntimeError, match=r"mc\.wait\(\).*await"):
                mc.wait(futures)
            with pytest.raises(RuntimeError, match=r"mc\.as_completed\(\).*await"):
                mc.as_completed(futures, timeout=5)
            assert len(mc.wait(futures, timeout=0).not_done) == 2
            with mc.Pool(1, backend="threads") as threads:
                # The first to finish may be one that does not need this loop: allowed.
                other = threads.submit(abs, -1)
                first = mc.wait([*futures, other], timeout=10, return_when="FIRST_COMPLETED")
                assert other in first.done
            values = list(await asyncio.gather(*futures))
            assert mc.wait(futures).not_done == set()  # done: nothing to block for
            return values

    assert _run(main) == [2, 4]


def test_leaving_a_pool_block_with_calls_still_on_the_callers_loop() -> None:
    """shutdown() cannot wait, in the caller's loop, for calls that need that
    loop to run: it returns, and they go on as the loop does."""

    async def main() -> int:
        with mc.Pool(2, backend="asyncio") as pool:
            future = pool.submit(on_callers_loop, 5)
        return await asyncio.wait_for(asyncio.wrap_future(future), 10)

    assert _run(main) == 10


def test_shared_in_a_task_on_the_callers_loop() -> None:
    async def state(_: int) -> Any:
        assert asyncio.get_running_loop() is _loop_of_caller[-1]
        return mc.worker_state(), mc.shared()

    async def main() -> Any:
        with mc.Pool(1, backend="asyncio", shared={"k": 1}) as pool:
            return await pool.submit(state, 0)

    assert _run(main) == (None, {"k": 1})


async def open_session() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()  # stands for a session bound to the pool's loop


async def on_the_sessions_loop(x: int) -> int:
    assert asyncio.get_running_loop() is mc.worker_state(), "not on init's loop"
    assert asyncio.get_running_loop() is not _loop_of_caller[-1]
    return x + 1


def test_a_pool_with_init_keeps_to_its_own_loop() -> None:
    """init's state (a session) is bound to the pool's loop: the tasks run there."""

    async def main() -> list[int]:
        with mc.Pool(2, backend="asyncio", init=open_session) as pool:
            one = await pool.submit(on_the_sessions_loop, 1)
            return [one, *pool.map(on_the_sessions_loop, [2])]

    assert _run(main) == [2, 3]


def test_sync_callers_still_use_the_pools_own_loop() -> None:
    async def where(_: int) -> str:
        return threading.current_thread().name

    with mc.Pool(2, backend="asyncio") as pool:
        assert pool.submit(where, 1).result(timeout=10) == "manycore-asyncio"
        assert pool.map(where, [1, 2]) == ["manycore-asyncio"] * 2


def test_calls_left_on_a_loop_that_ends_fail_instead_of_hanging() -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0.5)
        return x

    with mc.Pool(1, backend="asyncio") as pool:

        async def main() -> list[Any]:
            return [pool.submit(slow, 1), pool.submit(slow, 2)]  # never awaited

        futures = asyncio.run(main())  # the loop ends, then closes
        for future in futures:
            error = future.exception(timeout=10)
            assert isinstance(error, RuntimeError), error
        assert pool.submit(slow, 3).result(timeout=10) == 3  # plain code: the pool's loop


def test_leaving_a_pool_block_with_a_retried_call_on_the_callers_loop() -> None:
    tries: list[int] = []

    async def flaky(x: int) -> int:
        tries.append(x)
        if len(tries) == 1:
            raise ValueError("first try fails")
        return x

    async def main() -> Any:
        with mc.Pool(1, backend="asyncio") as pool:
            future = pool.schedule(flaky, (6,), retries=1)
        # The block did not wait (that would stop this loop); the first try runs
        # now, and its retry finds the pool closed.
        with pytest.raises((mc.PoolClosed, ValueError)):
            await asyncio.wait_for(asyncio.wrap_future(future), 10)
        return tries

    assert _run(main) in ([6], [6, 6])


async def bad(_: int) -> None:
    raise ValueError("boom")


def test_an_error_on_the_callers_loop_starts_its_traceback_at_the_call() -> None:
    async def main() -> Any:
        with mc.Pool(1, backend="asyncio") as pool, pytest.raises(ValueError) as info:
            await pool.submit(bad, 1)
        return info.value.__traceback__

    tb = _run(main)
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "call_at" not in names and "_at_home" not in names, names
    assert names[-1] == "bad"


def test_shutdown_does_not_wait_for_calls_on_a_stopped_callers_loop() -> None:
    """Submitted from a loop that then stops (not closed: between two
    run_until_complete() calls), a call waits for that loop to run again.
    shutdown() from plain code does not wait for it (it waited for ever); the
    call still runs when that loop does."""

    async def submit() -> Any:
        _loop_of_caller.append(asyncio.get_running_loop())
        return pool.submit(on_callers_loop, 3)

    pool = mc.Pool(1, backend="asyncio")
    loop = asyncio.new_event_loop()
    try:
        future = loop.run_until_complete(submit())
        stopper = threading.Thread(target=pool.shutdown, daemon=True)
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive(), "shutdown() waited for a loop that is not running"
        assert not future.done()

        async def finish() -> Any:
            return await asyncio.wait_for(asyncio.wrap_future(future), 10)

        assert loop.run_until_complete(finish()) == 6
    finally:
        _loop_of_caller.clear()
        loop.close()


def test_one_pool_awaited_from_two_loops_at_once() -> None:
    """Each loop's calls run on that loop; neither waits for the other's."""
    seen: dict[int, set[int]] = {0: set(), 1: set()}

    async def where(i: int) -> int:
        seen[i].add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0.05)
        return i

    with mc.Pool(4, backend="asyncio") as pool:
        out: dict[int, Any] = {}

        def run(i: int) -> None:
            async def main() -> list[int]:
                seen[i].add(-id(asyncio.get_running_loop()))  # this loop, negated
                return list(await asyncio.gather(*[pool.submit(where, i) for _ in range(5)]))

            out[i] = asyncio.run(main())

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads), "a loop's calls hung"
    assert out == {0: [0] * 5, 1: [1] * 5}
    for ids in seen.values():  # each loop's calls ran on that very loop
        assert len(ids) == 2 and sum(ids) == 0


def test_cancelling_the_awaiting_task_cancels_the_call_on_the_callers_loop() -> None:
    cancelled = asyncio.Event()

    async def hang(_: int) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> bool:
        with mc.Pool(1, backend="asyncio") as pool:
            waiting = asyncio.ensure_future(pool.submit(hang, 1))
            await asyncio.sleep(0.2)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await asyncio.wait_for(cancelled.wait(), 5)
            return True

    assert _run(main)


def _nothing() -> None:
    return None


@pytest.mark.parametrize("kind", ["asyncio-with-init", "processes"])
def test_cancelling_the_awaiting_task_stops_the_call_as_amap_does(kind: str) -> None:
    """As for ``await mc.amap``: a coroutine is cancelled (a pool with init runs
    it on its own loop), a process worker is killed and replaced."""
    import time

    cancelled = threading.Event()

    async def hang(_: int) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> None:
        if kind == "processes":
            pool = mc.Pool(1)
            fn: Any = time.sleep
            pids = pool.pids()
        else:
            pool = mc.Pool(1, backend="asyncio", init=_nothing)
            fn = hang
        with pool:
            future = pool.submit(fn, 60)
            waiting = asyncio.ensure_future(future)
            await asyncio.sleep(0.5)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await asyncio.to_thread(mc.wait, [future], 10)
            assert future.cancelled() or isinstance(future.exception(), CancelledError)
            if kind == "processes":
                assert pool.pids() != pids  # the worker was killed and replaced
            else:
                assert await asyncio.to_thread(cancelled.wait, 10)

    asyncio.run(main())
